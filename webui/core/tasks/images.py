"""Latents to pictures: the VAE decode, and a cheap preview that needs no VAE."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.core.families.base import LatentFormat


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in -1..1 to 8-bit RGB images (rounded, as diffusers' image processor does)."""
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    arr = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, C, h, w) to images (B, 3, H, W) in -1..1 (the VAE's scale and shift undone)."""
    z = latents.to(next(vae.parameters()).dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        z = z + shift
    out: torch.Tensor = vae.decode(z, return_dict=False)[0]
    return out


def cheap_preview(latents: torch.Tensor, latent: LatentFormat) -> Image.Image:
    """The first image of a batch, approximated from its latents (latent size), for live progress."""
    return to_pil(latent.preview(latents[0]).unsqueeze(0))[0]
