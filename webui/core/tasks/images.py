"""Pictures to latents and back: the VAE encode and decode (with the VAE's scale and shift), and a cheap
preview that needs no VAE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.core.devices import is_out_of_memory
from webui.core.families.base import LatentFormat
from webui.core.models.components import Components
from webui.core.models.offload import compute_place
from webui.core.tasks.vae_tiles import AUTO, VaeTiling, decode_tiled, downscale, encode_tiled


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images of one size to a (B, 3, H, W) float32 tensor in -1..1."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_init(
    parts: Components, images: Sequence[Image.Image] | torch.Tensor, tiling: VaeTiling = AUTO
) -> torch.Tensor:
    """Images (PIL, or a (B, 3, H, W) tensor in -1..1) to scaled latents in the UNet's device/dtype.

    The mode of the VAE's latent distribution is taken (deterministic, the best round trip; A1111 and
    diffusers sample it, which adds noise of the order of the distribution's tiny std). One image per
    VAE call, so an image's latents do not depend on its batch; large pictures in tiles (`tiling`).
    """
    x = images if isinstance(images, torch.Tensor) else to_tensor(images)
    vae = parts.vae
    device, dtype = compute_place(vae)  # where it runs, wherever it waits (models.offload)
    shift = getattr(vae.config, "shift_factor", None)
    tiled = tiling.wanted(vae, x.shape[-1], x.shape[-2])
    out = []
    for i in range(x.shape[0]):
        one = x[i : i + 1].to(device=device, dtype=dtype)
        z = encode_tiled(vae, one, tiling) if tiled else vae.encode(one).latent_dist.mode()
        if shift:
            z = z - shift
        out.append(z * vae.config.scaling_factor)
    return torch.cat(out).to(device=parts.device, dtype=parts.dtype)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in -1..1 to 8-bit RGB images (rounded, as diffusers' image processor does)."""
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    arr = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor, tiling: VaeTiling = AUTO) -> torch.Tensor:
    """Latents (B, C, h, w) to images (B, 3, H, W) in -1..1 (the VAE's scale and shift undone); large
    pictures in tiles (`tiling`). In "auto" a batch that would not fit at once is decoded picture by
    picture, and a decode that runs out of GPU memory is tiled."""
    z = latents.to(compute_place(vae)[1]) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        z = z + shift
    f = downscale(vae)
    width, height, batch = z.shape[-1] * f, z.shape[-2] * f, z.shape[0]
    if tiling.wanted(vae, width, height):
        return decode_tiled(vae, z, tiling)
    if batch > 1 and tiling.wanted(vae, width, height, batch):  # one fits, the batch at once does not
        return torch.cat([_decode_untiled(vae, z[i : i + 1], tiling) for i in range(batch)])
    return _decode_untiled(vae, z, tiling)


def _decode_untiled(vae: Any, z: torch.Tensor, tiling: VaeTiling) -> torch.Tensor:
    """One VAE call; in "auto", tiles after running out of memory (the failed call's activations, which
    the error's traceback holds, are released first: the tiled pass runs after the except block)."""
    try:
        out: torch.Tensor = vae.decode(z, return_dict=False)[0]
        return out
    except Exception as e:
        if tiling.mode != "auto" or not is_out_of_memory(e):
            raise
    # out of memory: tiled, after the except block, whose traceback holds the failed run's activations
    torch.cuda.empty_cache()
    return decode_tiled(vae, z, tiling)


def cheap_preview(latents: torch.Tensor, latent: LatentFormat) -> Image.Image:
    """The first image of a batch, approximated from its latents (latent size), for live progress."""
    return to_pil(latent.preview(latents[0]).unsqueeze(0))[0]
