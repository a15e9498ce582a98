"""txt2img: seeded noise, the denoising loop, latents out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from webui.core import families
from webui.core.families.unet import target_size_ids
from webui.core.models.components import Components
from webui.core.sampling.guidance import CondInput
from webui.core.sampling.loop import (
    CancelToken,
    Hook,
    ModelHook,
    ProgressCallback,
    denoise,
    runs_guided,
    step_kwargs,
)
from webui.core.sampling.samplers import set_timesteps
from webui.core.tasks.images import encode_init
from webui.core.tasks.refiner import RefinerStage, model_switch

sdxl_time_ids = target_size_ids  # SDXL's size conditioning, for callers that compare with diffusers


@torch.no_grad()
def inpaint_model_blank_cond(parts: Components, batch: int, height: int, width: int) -> torch.Tensor:
    """For an inpainting denoiser in txt2img: everything masked, over a mid-grey image (as A1111)."""
    z = encode_init(parts, torch.zeros(1, 3, height, width))
    _, h, w = families.of(parts).latent.shape(width, height)
    mask = torch.ones(1, 1, h, w, device=z.device, dtype=z.dtype)
    return torch.cat([mask, z], dim=1).repeat(batch, 1, 1, 1)


def family_model_kwargs(family: families.Family, distilled_cfg_scale: float | None) -> dict[str, Any] | None:
    """The inputs the family's denoiser call reads every step: Flux dev's distilled guidance scale."""
    if not family.distilled_guidance:
        return None
    scale = family.defaults.distilled_cfg_scale if distilled_cfg_scale is None else distilled_cfg_scale
    return {"guidance": scale}


def run_txt2img(
    parts: Components,
    scheduler: Any,
    noise: torch.Tensor,
    generators: Sequence[torch.Generator],
    cond: CondInput,
    uncond: CondInput,
    *,
    steps: int,
    cfg_scale: float,
    width: int,
    height: int,
    eta: float | None = None,
    churn: Mapping[str, float] | None = None,
    hooks: Sequence[Hook] = (),
    model_hooks: Sequence[ModelHook] = (),
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 0,
    per_image: bool = True,
    refiner: RefinerStage | None = None,
    timestep_kwargs: Mapping[str, Any] | None = None,
    distilled_cfg_scale: float | None = None,
) -> torch.Tensor:
    """Denoise `noise` (B, C, h, w in the family's latent format; unit variance, from the image seeds)
    into final latents; `refiner` takes over at its fraction of the steps. `timestep_kwargs` go to the
    scheduler's set_timesteps (a flow schedule's sigmas and shift); `distilled_cfg_scale` reaches
    families with distilled guidance as a model input."""
    family = families.of(parts)
    unet = parts.denoiser
    device, dtype = parts.device, parts.dtype
    set_timesteps(scheduler, steps, device, **(timestep_kwargs or {}))
    latents = noise.to(device=device, dtype=dtype) * getattr(scheduler, "init_noise_sigma", 1.0)
    model_kwargs = family_model_kwargs(family, distilled_cfg_scale)
    image_cond = None
    if family.takes_image_cond(unet):
        image_cond = inpaint_model_blank_cond(parts, noise.shape[0], height, width)
    elif family.takes_edit_image(unet):  # an edit model without a source image: zero image latents
        image_cond = torch.zeros_like(latents)
    guided = runs_guided(family.guidance, cond, cfg_scale, scheduler)
    return denoise(
        unet,
        scheduler,
        latents,
        cond,
        uncond,
        cfg_scale,
        call=family.denoiser,
        guidance=family.guidance,
        time_ids=family.size_conditioning(width, height, noise.shape[0], guided),
        image_cond=image_cond,
        model_kwargs=model_kwargs,
        extra_step=step_kwargs(scheduler, generators, eta, churn),
        hooks=hooks,
        model_hooks=model_hooks,
        on_progress=on_progress,
        cancel=cancel,
        preview_every=preview_every,
        per_image=per_image,
        switch=model_switch(
            refiner,
            steps,
            int(getattr(scheduler, "order", 1)),
            width=width,
            height=height,
            batch=noise.shape[0],
            cfg_scale=cfg_scale,
        ),  # fmt: skip
    )
