"""Latents to pictures: the VAE decode, and a cheap preview that needs no VAE."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

# Least-squares maps from the 4 latent channels to RGB (A1111's "cheap approximation"); values in -1..1.
_SD_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
_SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
_SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in -1..1 to 8-bit RGB images (rounded, as diffusers' image processor does)."""
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    arr = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, 4, h, w) to images (B, 3, 8h, 8w) in -1..1."""
    z = latents.to(next(vae.parameters()).dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        z = z + shift
    out: torch.Tensor = vae.decode(z, return_dict=False)[0]
    return out


def cheap_preview(latents: torch.Tensor, sdxl: bool) -> Image.Image:
    """The first image of a batch, approximated from its latents (1/8 size), for live progress."""
    m = torch.tensor(_SDXL_LATENT_RGB if sdxl else _SD_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->rhw", latents[0].float().cpu(), m)
    if sdxl:
        rgb = rgb + torch.tensor(_SDXL_BIAS).view(3, 1, 1)
    return to_pil(rgb.unsqueeze(0))[0]
