"""Outpainting: a bigger canvas around the init image, its new area filled and masked for inpainting.

The canvas grows by `pixels` on each chosen side and is then rounded up to a multiple of 8 (latents are
1/8 size; see `webui.core.sizes.canvas_geometry`); the rounding surplus is masked like the rest of the
new area.

The new area is pre-filled so the model starts from something plausible rather than black:

    "edge"      every new pixel copies the nearest border pixel of the image (edge stretch, as poor man's
                outpainting); stripes fade towards the image's mean colour with distance, so corners and
                far areas do not carry hard streaks
    "average"   the image's mean colour (outpainting mk2's starting point)

plus, with `noise` > 0, seeded Gaussian noise of std noise x 64 levels (mk2 adds colour noise too). The
mask is white exactly on the new area; the original pixels are black, so inpainting keeps them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

from webui.core.sizes import OUTPAINT_DIRECTIONS as DIRECTIONS
from webui.core.sizes import CanvasGeometry, canvas_geometry

FILLS = ("edge", "average")
_FADE = 0.015  # per pixel of distance: how fast edge stripes fade to the mean colour
_NOISE_LEVELS = 64.0


@dataclass(frozen=True)
class Outpaint:
    image: Image.Image  # RGB canvas, original pasted at (geometry.left, geometry.top)
    mask: Image.Image  # "L": 255 on the new area, 0 on the original
    geometry: CanvasGeometry


def _edge_fill(arr: np.ndarray, geo: CanvasGeometry) -> np.ndarray:
    """The canvas with each new pixel the nearest original pixel, faded to the mean with distance."""
    h, w = arr.shape[:2]
    ys = np.clip(np.arange(geo.height) - geo.top, 0, h - 1)
    xs = np.clip(np.arange(geo.width) - geo.left, 0, w - 1)
    stretched = arr[ys][:, xs].astype(np.float64)
    dy = np.maximum(geo.top - np.arange(geo.height), 0) + np.maximum(
        np.arange(geo.height) - (geo.top + h - 1), 0
    )
    dx = np.maximum(geo.left - np.arange(geo.width), 0) + np.maximum(
        np.arange(geo.width) - (geo.left + w - 1), 0
    )
    dist = np.hypot(dy[:, None], dx[None, :])
    keep = np.exp(-_FADE * dist)[..., None]
    mean = arr.reshape(-1, 3).mean(axis=0)
    out: np.ndarray = stretched * keep + mean * (1 - keep)
    return out


def extend_canvas(
    image: Image.Image,
    pixels: int,
    directions: Sequence[str] = DIRECTIONS,
    *,
    fill: str = "edge",
    noise: float = 0.0,
    seed: int = 0,
    mask: Image.Image | None = None,
) -> Outpaint:
    """The outpainting canvas for `image` (RGB). A user `mask` ("L", the image's size) is kept on the
    canvas too, so one request can extend the picture and repaint part of it."""
    if fill not in FILLS:
        raise ValueError(f"outpainting fill must be one of {', '.join(FILLS)}, got {fill!r}")
    geo = canvas_geometry(image.width, image.height, pixels, directions)
    arr = np.asarray(image.convert("RGB"))
    if fill == "edge":
        canvas = _edge_fill(arr, geo)
    else:
        canvas = np.broadcast_to(arr.reshape(-1, 3).mean(axis=0), (geo.height, geo.width, 3)).astype(
            np.float64
        )
    new_area = np.ones((geo.height, geo.width), dtype=bool)
    new_area[geo.top : geo.top + image.height, geo.left : geo.left + image.width] = False
    if noise > 0:
        rng = np.random.default_rng(seed)
        canvas = canvas + rng.standard_normal(canvas.shape) * (noise * _NOISE_LEVELS) * new_area[..., None]
    out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    out[~new_area] = arr.reshape(-1, 3)  # the original, byte for byte
    mask_img = Image.fromarray(np.where(new_area, 255, 0).astype(np.uint8), "L")
    if mask is not None:
        placed = Image.new("L", mask_img.size)
        placed.paste(mask.convert("L"), (geo.left, geo.top))
        mask_img = ImageChops.lighter(mask_img, placed)
    return Outpaint(Image.fromarray(out, "RGB"), mask_img, geo)
