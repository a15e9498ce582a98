"""A1111's img2img resize modes, on PIL images, plus the latent upscale of mode 3.

    0  just resize                    stretch to width x height
    1  crop and resize                scale to cover width x height keeping the aspect ratio, centre, crop
    2  resize and fill                scale to fit inside, centre, fill the bars by stretching the edge
                                      rows/columns of the image outwards
    3  just resize (latent upscale)   the image is encoded at its own size and the *latents* are resized
                                      (bilinear) to the target; on pixels (masks, paste-back) it acts as 0

The arithmetic (integer divisions, paste offsets, the edge-stretch boxes) is A1111's
`images.resize_image`, so a request gives the same geometry here as there, quirks included: with an odd
target side and "resize and fill", the last row/column can stay black (request sizes are multiples of 8,
where this cannot happen). Resampling is Lanczos, as
A1111 with its img2img upscaler set to None; an optional `upscale` callable stands in for a model
upscaler when the image grows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import torch
from PIL import Image

from webui.core.sizes import LATENT_DOWNSCALE

JUST_RESIZE: Final = 0
CROP_AND_RESIZE: Final = 1
RESIZE_AND_FILL: Final = 2
LATENT_UPSCALE: Final = 3
RESIZE_MODES: Final = {
    JUST_RESIZE: "Just resize",
    CROP_AND_RESIZE: "Crop and resize",
    RESIZE_AND_FILL: "Resize and fill",
    LATENT_UPSCALE: "Just resize (latent upscale)",
}

Upscale = Callable[[Image.Image, int, int], Image.Image]


def _resize(im: Image.Image, w: int, h: int, upscale: Upscale | None) -> Image.Image:
    if upscale is not None and im.mode != "L" and (w > im.width or h > im.height):
        im = upscale(im, w, h)
    if im.size != (w, h):
        im = im.resize((w, h), resample=Image.Resampling.LANCZOS)
    return im


def resize_image(
    mode: int, im: Image.Image, width: int, height: int, *, upscale: Upscale | None = None
) -> Image.Image:
    """`im` brought to width x height by resize mode 0, 1 or 2 (3 acts as 0 here: see module doc)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {sorted(RESIZE_MODES)}, got {mode!r}")
    if mode in (JUST_RESIZE, LATENT_UPSCALE):
        return _resize(im, width, height, upscale)
    ratio = width / height
    src_ratio = im.width / im.height
    if mode == CROP_AND_RESIZE:
        # Cover: the side that is relatively shorter is scaled to the target, the other overflows.
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        # Fit: the side that is relatively longer is scaled to the target, the other leaves bars.
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    # A1111 crashes when an extreme aspect ratio rounds a side to 0 pixels; keep one.
    src_w, src_h = max(src_w, 1), max(src_h, 1)
    resized = _resize(im, src_w, src_h, upscale)
    out = Image.new(im.mode if im.mode in ("L", "RGB") else "RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == RESIZE_AND_FILL:
        _fill_bars(out, resized, ratio, src_ratio, width, height, src_w, src_h)
    return out


def _fill_bars(
    out: Image.Image,
    resized: Image.Image,
    ratio: float,
    src_ratio: float,
    width: int,
    height: int,
    src_w: int,
    src_h: int,
) -> None:
    """Stretch the first/last row (or column) of `resized` over the bars around it, as A1111 does."""
    if ratio < src_ratio:  # bars above and below
        bar = height // 2 - src_h // 2
        if bar > 0:
            top = resized.resize((width, bar), box=(0, 0, width, 0))
            bottom = resized.resize((width, bar), box=(0, resized.height, width, resized.height))
            out.paste(top, box=(0, 0))
            out.paste(bottom, box=(0, bar + src_h))
    elif ratio > src_ratio:  # bars left and right
        bar = width // 2 - src_w // 2
        if bar > 0:
            left = resized.resize((bar, height), box=(0, 0, 0, height))
            right = resized.resize((bar, height), box=(resized.width, 0, resized.width, height))
            out.paste(left, box=(0, 0))
            out.paste(right, box=(bar + src_w, 0))


def resize_latents(
    latents: torch.Tensor, width: int, height: int, downscale: int = LATENT_DOWNSCALE
) -> torch.Tensor:
    """Mode 3: latents (B, C, h, w) resized to the target's latent size (bilinear, as A1111);
    `downscale` is the family's (`LatentFormat.downscale`)."""
    size = (height // downscale, width // downscale)
    if tuple(latents.shape[-2:]) == size:
        return latents
    return torch.nn.functional.interpolate(latents, size=size, mode="bilinear")
