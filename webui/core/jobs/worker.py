"""One job through the engine: progress and previews out, images recorded, every failure caught.

`execute` never raises for a bad job: a RequestError, an out-of-memory error (offloaded parts put back
in RAM and caches freed; the message says what to try, the model stays loaded) or any other exception
becomes an Outcome with the message, and the worker goes on with the next job.
Images the request asked not to save (A1111's API default) are still written, into the job's own
folder, so a client that comes back later can fetch them.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from webui.core.devices import is_out_of_memory, oom_advice
from webui.core.disk import disk_full_message
from webui.core.engine import Engine, JobProgress
from webui.core.jobs.codec import JobRequest
from webui.core.jobs.info import JobImage, JobProgressInfo
from webui.core.outputs.options import OutputOptions
from webui.core.outputs.saving import save_image
from webui.core.sampling.loop import CancelToken
from webui.core.types import GeneratedImage, RequestError

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def progress(self, info: JobProgressInfo, preview_png: bytes | None) -> None: ...

    def images(self, images: Sequence[JobImage]) -> None: ...


Place = Callable[[GeneratedImage], JobImage]  # keeps one finished image; returns what the job lists


@dataclass(frozen=True)
class Outcome:
    images: tuple[JobImage, ...]
    grid_path: str | None = None
    model_title: str | None = None
    interrupted: bool = False
    error: str | None = None  # None: the engine run returned
    error_field: str | None = None  # the request field a RequestError named (a bad value, not a crash)
    output: dict[str, Any] | None = None  # what a job without images made (GenerationResult.output)


def progress_info(p: JobProgress) -> JobProgressInfo:
    within = p.step / p.steps if p.steps else 0.0
    fraction = ((p.batch - 1) + within) / p.batches if p.batches else 0.0
    if p.bytes_total:
        fraction = p.bytes_done / p.bytes_total
    return JobProgressInfo(
        p.step,
        p.steps,
        p.batch,
        p.batches,
        p.eta,
        min(max(fraction, 0.0), 1.0),
        p.bytes_done,
        p.bytes_total,
        p.speed,
    )


def preview_png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Images:
    """The job's images as they finish, each with a file on disk."""

    def __init__(self, results_dir: Path, report: Reporter, place: Place | None = None) -> None:
        self.results_dir = results_dir
        self.report = report
        self.place = place
        self.done: dict[tuple[int, int, str, str], JobImage] = {}

    def add(self, images: Sequence[GeneratedImage]) -> tuple[JobImage, ...]:
        fresh = False
        for img in images:
            key = (img.seed, img.subseed, img.infotext, str(img.path))
            if key not in self.done:
                self.done[key] = self._job_image(img)
                fresh = True
        listed = tuple(self.done.values())
        if fresh:
            self.report.images(listed)
        return listed

    def _job_image(self, img: GeneratedImage) -> JobImage:
        if self.place is not None:
            return self.place(img)
        path = img.path
        if path is None:  # save_images=False: keep it in the job's folder instead of outputs/
            path = save_image(img.image, self.results_dir, img.seed, img.infotext)
        return JobImage(str(path), img.seed, img.subseed, img.infotext)


def execute(
    engine: Engine,
    request: JobRequest,
    cancel: CancelToken,
    *,
    results_dir: Path,
    report: Reporter,
    preview_every: int = 0,
    outputs: OutputOptions | None = None,
    place: Place | None = None,
) -> Outcome:
    """Run one request; never raises for a failing job. `place(image)` keeps each finished image
    instead of the default (its saved file, or a file in `results_dir`): a remote worker sends it."""
    images = _Images(results_dir, report, place)

    def on_progress(p: JobProgress) -> None:
        png = preview_png(p.preview) if p.preview is not None else None
        report.progress(progress_info(p), png)

    error: str | None = None
    error_field: str | None = None
    oom = False
    try:
        result = engine.run(
            request,
            progress=on_progress,
            cancel=cancel,
            preview_every=preview_every,
            on_image=lambda img: images.add([img]),
            outputs=outputs,
        )
    except RequestError as e:
        error, error_field = str(e), e.field
    except Exception as e:
        oom = is_out_of_memory(e)
        full = disk_full_message(e)
        if full is not None:
            log.error("job failed: %s", full)
            error = full
        elif oom:
            what = str(e).splitlines()[0] if str(e) else type(e).__name__
            error = f"out of memory: {what}; {oom_advice(engine.manager.precision.vram)}"
        else:
            log.exception("job failed")
            error = f"{type(e).__name__}: {e}"
    if error is not None:
        if oom:
            if engine.manager.offloader is not None:
                engine.manager.offloader.settle()  # a part or block left on the device mid-move goes back
            free_memory()  # after the except block: the traceback no longer holds the tensors
        return Outcome(tuple(images.done.values()), error=error, error_field=error_field)
    listed = images.add(result.images)
    if result.warnings and not listed and result.output is not None:
        for message in result.warnings:
            log.warning("job warning: %s", message)
    elif result.warnings:
        for message in result.warnings:
            log.warning("job warning: %s", message)
        listed = tuple(dataclasses.replace(i, warnings=tuple(result.warnings)) for i in listed)
    return Outcome(
        listed,
        grid_path=None if result.grid_path is None else str(result.grid_path),
        model_title=result.model_title,
        interrupted=result.interrupted,
        output=None if result.output is None else {**result.output, "warnings": list(result.warnings)},
    )
