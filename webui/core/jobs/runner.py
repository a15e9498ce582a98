"""A runner over the job queue: `runner(request) -> GenerationResult`, like `Engine.run`, but each call
is a job of one owner in the fair queue. Scripts that make many images (X/Y/Z plot) take a runner, so
the cells of a plot wait in line like any other job of that user.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from webui.core.jobs.info import JobState
from webui.core.types import GeneratedImage, GenerationRequest, GenerationResult

Runner = Callable[[GenerationRequest], GenerationResult]


class JobFailed(RuntimeError):
    """A job run through a runner failed; the message is the job's error."""


def _load(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class QueueRunner:
    """`runner(request) -> GenerationResult`: submit as `owner`'s job, wait, return its images.

    `samplers` is the engine's sampler catalog (extension samplers included), for scripts that check
    sampler names before they queue anything; `upscalers` the studio's picture upscalers by name
    (`upscale(image, width, height)`: Lanczos, Nearest, then the extensions', as Extras offers them; SD
    upscale enlarges with one); `extension_fields` the loaded extensions' UI fields by extension name
    (what a request's `extension_args` may set: X/Y/Z plot's extension axes)."""

    def __init__(self, queue: Any, owner: str, timeout: float | None = None) -> None:
        self.queue, self.owner, self.timeout = queue, owner, timeout

    @property
    def samplers(self) -> Any:
        return self.queue.engine.samplers

    @property
    def upscalers(self) -> dict[str, Callable[[Image.Image, int, int], Image.Image]]:
        upscalers: dict[str, Callable[[Image.Image, int, int], Image.Image]] = (
            self.queue.engine.extras_upscalers()
        )
        return upscalers

    @property
    def extension_fields(self) -> dict[str, tuple[Any, ...]]:
        hooks = self.queue.engine.hooks
        if not hasattr(hooks, "ui_sections"):
            return {}
        names = dict.fromkeys(name for name, _ in hooks.ui_sections())
        return {name: hooks.ui_fields(name) for name in names}

    def __call__(self, request: GenerationRequest) -> GenerationResult:
        queue, owner, timeout = self.queue, self.owner, self.timeout
        info = queue.wait(queue.submit(request, owner).id, timeout)
        if info.state is JobState.FAILED:
            raise JobFailed(info.error or f"job {info.id} failed")
        images = tuple(
            GeneratedImage(_load(i.path), i.seed, i.subseed, i.infotext, Path(i.path)) for i in info.images
        )
        stopped = info.state is not JobState.DONE or info.interrupted
        grid = Path(info.grid_path) if info.grid_path else None
        return GenerationResult(
            request,
            images,
            info.model_title or "",
            interrupted=stopped,
            grid_path=grid,
            warnings=info.warnings,
        )


def queue_runner(queue: Any, owner: str, timeout: float | None = None) -> Runner:
    """Submit each request as `owner`'s job, wait for it, and return its images as a GenerationResult."""
    return QueueRunner(queue, owner, timeout)
