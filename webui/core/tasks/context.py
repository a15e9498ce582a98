"""What a task needs to make one batch of images: the model, its prompts, and the run's controls.

The engine builds one `BatchContext` per batch; the tasks (txt2img with hires fix, img2img/inpaint/
outpaint) turn seeds into finished pictures with it and never see the job queue or the saving code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from webui.core.models.components import Components
from webui.core.prompts.conditioning import ScheduledConditioning
from webui.core.sampling.catalog import BUILTIN, SamplerCatalog
from webui.core.sampling.loop import CancelToken, Hook, ModelHook, Progress, ProgressCallback, Stopped
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.refiner import RefinerStage
from webui.core.tasks.vae_tiles import AUTO, VaeTiling

# (steps done in the whole batch, steps in the whole batch, ETA of this pass, latents for a preview)
StepReport = Callable[[int, int, float, torch.Tensor | None], None]
Encode = Callable[[str, str, int], tuple[ScheduledConditioning, ScheduledConditioning]]


@dataclass(frozen=True)
class PassModel:
    """A model a pass runs on (the job's, the hires pass's own checkpoint, a refiner) and an `encode`
    for prompts with its text encoders."""

    parts: Components
    encode: Encode


@dataclass(frozen=True)
class Refiner:
    """The refiner a job switches to at `switch_at` of a pass's steps (see tasks.refiner)."""

    model: PassModel
    switch_at: float

    def stage(self, prompt: str, negative: str, steps: int) -> RefinerStage:
        """The refiner of one pass with these prompts, scheduled over the pass's `steps`."""
        cond, uncond = self.model.encode(prompt, negative, steps)
        return RefinerStage(self.model.parts, cond, uncond, self.switch_at)


@dataclass(frozen=True, kw_only=True)
class BatchContext:
    parts: Components
    prompt: str  # with styles applied
    negative_prompt: str
    cond: ScheduledConditioning
    uncond: ScheduledConditioning
    encode: Encode  # (prompt, negative prompt, steps) -> conditionings (for a second pass's prompts)
    report: StepReport
    hooks: tuple[Hook, ...] = ()
    model_hooks: tuple[ModelHook, ...] = ()  # BEFORE_MODEL: extra model inputs (ControlNet...)
    cancel: CancelToken | None = None
    preview_every: int = 0
    per_image: bool = True  # the model sees one image at a time (see sampling.loop.predict)
    vae_tiling: VaeTiling = AUTO  # when the VAE works in tiles (`--tiled-vae`)
    churn: Mapping[str, float] = field(default_factory=dict)
    upscalers: Mapping[str, Callable[[Image.Image, int, int], Image.Image]] = field(default_factory=dict)
    samplers: SamplerCatalog = BUILTIN  # makes the schedulers (built-in and extension samplers)
    # hires fix: the second pass's (prompt, negative prompt) with styles applied (None: the first
    # pass's), and the context it runs in when its checkpoint or LoRAs differ (see tasks.hires_networks)
    hr_prompts: tuple[str, str] | None = None
    second_pass: Callable[[], AbstractContextManager[PassModel]] | None = None
    refiner: Refiner | None = None  # in the last pass: the second with hires fix, else the only one

    @property
    def model(self) -> PassModel:
        """The job's own model (the first pass's)."""
        return PassModel(self.parts, self.encode)

    def progress(self, offset: int, total: int) -> ProgressCallback:
        """The loop's progress callback for a pass that starts `offset` steps into a `total`-step batch."""

        def on_step(p: Progress) -> None:  # an adaptive sampler's own count may outgrow the plan
            self.report(offset + p.step, max(total, offset + p.total), p.eta, p.latents)

        return on_step

    def keeps_partial(self, stop: Stopped) -> bool:
        """Whether the pictures a stop reached are kept: an interrupt the user asked for (not a skip,
        not a shutdown that runs the job again)."""
        return stop.interrupted and self.cancel is not None and self.cancel.keeps_partial

    def loop_args(self, offset: int, total: int) -> dict[str, Any]:
        return dict(
            hooks=self.hooks,
            model_hooks=self.model_hooks,
            on_progress=self.progress(offset, total),
            cancel=self.cancel,
            preview_every=self.preview_every,
            per_image=self.per_image,
        )


def decode_each(
    parts: Components, latents: torch.Tensor, per_image: bool = True, tiling: VaeTiling = AUTO
) -> list[Image.Image]:
    """Decode image by image (a batch decodes bit-identically to single runs), or the batch at once
    (`per_image` False: the batched mode on accelerators); large pictures in tiles (`tiling`)."""
    if not per_image:
        return to_pil(decode(parts.vae, latents, tiling))
    decoded = torch.cat([decode(parts.vae, latents[i : i + 1], tiling) for i in range(latents.shape[0])])
    return to_pil(decoded)
