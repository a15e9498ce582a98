"""Outpainting: a bigger canvas around the init image, its new area filled and masked for inpainting.

The canvas grows by `pixels` on each chosen side and is then rounded up to a multiple of 8 (latents are
1/8 size; see `webui.core.sizes.canvas_geometry`); the rounding surplus is masked like the rest of the
new area.

The new area is pre-filled so the model starts from something plausible rather than black:

    "edge"      every new pixel copies the nearest border pixel of the image (edge stretch, as poor man's
                outpainting); stripes fade towards the image's mean colour with distance, so corners and
                far areas do not carry hard streaks
    "average"   the image's mean colour
    "matched"   outpainting mk2's idea: random noise whose spectrum follows the picture's (`falloff`: the
                exponent on the picture's spectrum magnitude, 0 = white noise with the most detail, higher =
                smoother), made of colour noise blended with grey noise (`color_variation`: 0 grey, 1 colour),
                then histogram-matched channel by channel to the picture's own pixel values

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

FILLS = ("edge", "average", "matched")
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


def _matched_fill(
    arr: np.ndarray,
    geo: CanvasGeometry,
    new_area: np.ndarray,
    falloff: float,
    color_variation: float,
    seed: int,
) -> np.ndarray:
    """The canvas (floats, 0..255) with the new area filled by spectrum-shaped, histogram-matched noise."""
    h, w = arr.shape[:2]
    original = arr.astype(np.float64)
    mean = original.reshape(-1, 3).mean(axis=0)
    canvas = np.broadcast_to(mean, (geo.height, geo.width, 3)).copy()
    canvas[geo.top : geo.top + h, geo.left : geo.left + w] = original
    grey_canvas = canvas.mean(axis=2)
    magnitude = np.abs(np.fft.fft2(grey_canvas - grey_canvas.mean()))
    magnitude /= max(float(magnitude.max()), 1e-12)
    shaping = magnitude**falloff if falloff > 0 else np.ones_like(magnitude)
    rng = np.random.default_rng(seed)
    colour = rng.standard_normal((geo.height, geo.width, 3))
    grey = rng.standard_normal((geo.height, geo.width))[..., None]
    noise = color_variation * colour + (1.0 - color_variation) * grey
    out = canvas.copy()
    for c in range(3):
        shaped = np.real(np.fft.ifft2(np.fft.fft2(noise[..., c]) * shaping))
        values = shaped[new_area]
        ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        quantiles = (ranks + 0.5) / len(values)
        out[..., c][new_area] = np.quantile(original[..., c].ravel(), quantiles)
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
    falloff: float = 1.0,
    color_variation: float = 0.05,
) -> Outpaint:
    """The outpainting canvas for `image` (RGB). A user `mask` ("L", the image's size) is kept on the
    canvas too, so one request can extend the picture and repaint part of it."""
    if fill not in FILLS:
        raise ValueError(f"outpainting fill must be one of {', '.join(FILLS)}, got {fill!r}")
    geo = canvas_geometry(image.width, image.height, pixels, directions)
    arr = np.asarray(image.convert("RGB"))
    new_area = np.ones((geo.height, geo.width), dtype=bool)
    new_area[geo.top : geo.top + image.height, geo.left : geo.left + image.width] = False
    if fill == "edge":
        canvas = _edge_fill(arr, geo)
    elif fill == "matched":
        canvas = _matched_fill(arr, geo, new_area, falloff, color_variation, seed)
    else:
        canvas = np.broadcast_to(arr.reshape(-1, 3).mean(axis=0), (geo.height, geo.width, 3)).astype(
            np.float64
        )
    if noise > 0 and new_area.any():
        rng = np.random.default_rng(seed + 1 if fill == "matched" else seed)
        canvas = canvas + rng.standard_normal(canvas.shape) * (noise * _NOISE_LEVELS) * new_area[..., None]
    out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    out[~new_area] = arr.reshape(-1, 3)  # the original, byte for byte
    mask_img = Image.fromarray(np.where(new_area, 255, 0).astype(np.uint8), "L")
    if mask is not None:
        placed = Image.new("L", mask_img.size)
        placed.paste(mask.convert("L"), (geo.left, geo.top))
        mask_img = ImageChops.lighter(mask_img, placed)
    return Outpaint(Image.fromarray(out, "RGB"), mask_img, geo)
