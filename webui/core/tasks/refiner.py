"""The refiner switch (A1111 1.6's `refiner_checkpoint` / `refiner_switch_at`) for one sampling pass.

At the first step whose completed fraction `step / steps` reaches `switch_at` (A1111's comparison, with
its "switch by sampling steps" rule), the loop hands the latents to the refiner: the scheduler goes on
with its own state (a multistep sampler keeps its history), so the run is the same schedule with the
model changed; at `switch_at` 1 the refiner never runs. The refiner has the pass's architecture (the
engine checks), and its prompts are encoded by its own text encoders.

With hires fix the refiner takes over in the second pass (A1111's default, "second pass").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webui.core import families
from webui.core.models.components import Components
from webui.core.sampling.guidance import CondInput
from webui.core.sampling.loop import ModelSwitch


@dataclass(frozen=True)
class RefinerStage:
    """The refiner of one pass: its components and conditioning, and where it takes over."""

    parts: Components
    cond: CondInput
    uncond: CondInput
    switch_at: float


def switch_step(steps: int, switch_at: float) -> int:
    """The first step (from 0) the refiner runs, out of `steps`: the first with step / steps >= switch_at
    (`steps` when none is: the refiner never runs)."""
    return next((s for s in range(steps) if s / steps >= switch_at), steps)


def model_switch(
    stage: RefinerStage | None,
    steps: int,
    order: int,
    *,
    width: int,
    height: int,
    batch: int,
    cfg_scale: float,
) -> ModelSwitch | None:
    """The loop's switch for a pass of `steps` steps on a scheduler of this `order` (timesteps per
    step), or None when there is no refiner or it would run no step."""
    if stage is None:
        return None
    k = switch_step(steps, stage.switch_at)
    if k >= steps:
        return None
    family = families.of(stage.parts)
    guided = family.guidance.needs_uncond(stage.cond, cfg_scale)
    time_ids = family.size_conditioning(width, height, batch, guided)
    return ModelSwitch(k * order, stage.parts.denoiser, stage.cond, stage.uncond, time_ids)


def last_model(parts: Components, stage: RefinerStage | None, steps: int) -> Components:
    """The model whose VAE decodes a pass of `steps` steps: the refiner once it has run (A1111 decodes
    with the model loaded last), else the pass's own."""
    if stage is None or switch_step(steps, stage.switch_at) >= steps:
        return parts
    return stage.parts


def fields_from_infotext(params: Mapping[str, str]) -> dict[str, object]:
    """The request's refiner fields from parsed infotext ("Refiner", "Refiner switch at"); {} if none.
    A malformed number raises ValueError."""
    if "Refiner" not in params:
        return {}
    out: dict[str, object] = {"refiner_checkpoint": params["Refiner"]}
    if "Refiner switch at" in params:
        out["refiner_switch_at"] = float(params["Refiner switch at"])
    return out
