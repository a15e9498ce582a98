"""A sampling pass for any family: its fresh scheduler, and img2img by the family's kind.

Diffusion families (SD1/SD2/SDXL) get a scheduler from the sampler catalog and `img2img.run_img2img`;
flow-matching ones (SD3/SD3.5, Flux) a flow sampler with the model's shift (by image size where it is
dynamic) and `flow_img2img.run_flow_img2img`. txt2img's first pass, hires fix's second pass and the
img2img tab all start here, so each family is asked once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.core import families
from webui.core.models.components import Components
from webui.core.sampling.catalog import SamplerCatalog
from webui.core.sampling.flow_samplers import make_flow_scheduler
from webui.core.sampling.guidance import CondInput
from webui.core.tasks.flow_img2img import run_flow_img2img
from webui.core.tasks.img2img import run_img2img


@dataclass(frozen=True)
class PassScheduler:
    scheduler: Any
    timestep_kwargs: dict[str, Any] = field(default_factory=dict)  # for set_timesteps (a flow schedule's)


def pass_scheduler(
    samplers: SamplerCatalog,
    parts: Components,
    sampler: str,
    schedule: str | None,
    *,
    width: int,
    height: int,
    steps: int,
    seeds: Sequence[int],
    eta: float | None = None,
) -> PassScheduler:
    """A fresh scheduler for one pass of `steps` at width x height (`eta`: the request's, None for the
    sampler's default; our sigma-space samplers plan their model calls with it)."""
    family = families.of(parts)
    if not family.flow_matching:
        return PassScheduler(
            samplers.make_scheduler(
                sampler,
                schedule,
                parts.scheduler_config,
                noise_seeds=seeds,
                model_group=family.group,
                eta=eta,
            )
        )
    name, label = samplers.resolve_for(True, sampler, schedule)
    m = family.latent.size_multiple
    flow = make_flow_scheduler(name, label, parts.scheduler_config, (height // m) * (width // m), steps)
    return PassScheduler(flow.scheduler, flow.timestep_kwargs)


def run_img2img_pass(
    parts: Components,
    sched: PassScheduler,
    init_latents: torch.Tensor,
    noise: torch.Tensor,
    generators: Sequence[torch.Generator],
    cond: CondInput,
    uncond: CondInput,
    *,
    image_cond: torch.Tensor | None = None,
    image_cfg_scale: float | None = None,
    distilled_cfg_scale: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """img2img (or inpainting) by the family's kind; `kwargs` are run_img2img's shared keyword arguments
    (steps, strength, cfg_scale, width, height, eta, churn, mask_latent, inpainting_fill,
    initial_noise_multiplier and the loop's hooks/progress/cancel). `image_cond` is for inpainting
    UNets, `image_cfg_scale` for edit UNets, `distilled_cfg_scale` for flow families with distilled
    guidance."""
    if not families.of(parts).flow_matching:
        scheduler = sched.scheduler
        return run_img2img(
            parts,
            scheduler,
            init_latents,
            noise,
            generators,
            cond,
            uncond,
            image_cond=image_cond,
            image_cfg_scale=image_cfg_scale,
            **kwargs,
        )
    if image_cond is not None:
        raise ValueError("flow-matching families take no inpainting conditioning (image_cond)")
    return run_flow_img2img(
        parts,
        sched.scheduler,
        init_latents,
        noise,
        generators,
        cond,
        uncond,
        timestep_kwargs=sched.timestep_kwargs,
        distilled_cfg_scale=distilled_cfg_scale,
        **kwargs,
    )
