"""txt2img: seeded noise, the denoising loop, latents out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from webui.core.models.components import Components
from webui.core.sampling.loop import CancelToken, CondInput, Hook, ProgressCallback, denoise, step_kwargs
from webui.core.sampling.samplers import set_timesteps


def sdxl_time_ids(width: int, height: int) -> torch.Tensor:
    """SDXL's size and crop conditioning: original size, crop top-left (0, 0), target size."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


@torch.no_grad()
def inpaint_model_blank_cond(parts: Components, batch: int, height: int, width: int) -> torch.Tensor:
    """For a 9-channel inpainting UNet in txt2img: everything masked, over a mid-grey image (as A1111)."""
    vae = parts.vae
    p = next(vae.parameters())
    grey = torch.zeros(1, 3, height, width, device=p.device, dtype=p.dtype)
    z = vae.encode(grey).latent_dist.mode() * vae.config.scaling_factor
    mask = torch.ones(1, 1, height // 8, width // 8, device=z.device, dtype=z.dtype)
    cond = torch.cat([mask, z], dim=1).to(parts.dtype)
    return cond.repeat(batch, 1, 1, 1)


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
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 0,
) -> torch.Tensor:
    """Denoise `noise` (B, 4, H/8, W/8; unit variance, from the image seeds) into final latents."""
    unet = parts.unet
    device, dtype = parts.device, parts.dtype
    set_timesteps(scheduler, steps, device)
    latents = noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    image_cond = None
    if unet.config.in_channels == 9:
        image_cond = inpaint_model_blank_cond(parts, noise.shape[0], height, width)
    return denoise(
        unet,
        scheduler,
        latents,
        cond,
        uncond,
        cfg_scale,
        time_ids=sdxl_time_ids(width, height) if parts.text_encoder_2 is not None else None,
        image_cond=image_cond,
        extra_step=step_kwargs(scheduler, generators, eta, churn),
        hooks=hooks,
        on_progress=on_progress,
        cancel=cancel,
        preview_every=preview_every,
    )
