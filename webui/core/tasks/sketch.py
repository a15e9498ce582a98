"""img2img "Sketch" and Inpaint "Inpaint sketch": a picture painted with a colour brush -> the init image
(and, for inpaint sketch, the mask).

What A1111 does with a colour sketch, and what is ours:

- Sketch: the painted picture (the strokes flattened onto it) is the init image; there is no mask. With
  nothing painted that is the picture itself: a plain img2img.
- Inpaint sketch: the mask is every pixel where the painted picture differs from the original in any
  channel (255, else 0). The init image is the painted picture softened by the mask blur: a Gaussian blur
  of radius `mask_blur` of the painted picture, laid over the original through the mask blurred the same
  way. The engine then blurs the mask again for the latent blend and the paste-back, as for any mask.
- Ours: that softened blend is kept inside the painted pixels only; every pixel the user did not paint
  stays the original's exact bytes (A1111 lets the blur halo tint a band around the strokes), so the
  inpaint guarantee "outside the mask nothing changes" holds against the picture the user uploaded.
  Nothing painted is an error naming the mask: there is nothing to inpaint.
- Mask transparency (0-100, A1111's Inpaint sketch slider): the painted colours are laid over the
  original at (100 - transparency) % opacity, so the strokes are a hint the model may follow loosely.
  A1111 also dims the mask itself by the same amount; its inpainting then rounds a mask below one half to
  "keep", so from 50 % on nothing is repainted. Ours keeps the mask whole: the painted pixels are always
  repainted, from a fainter colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from webui.core.types import RequestError


@dataclass(frozen=True)
class InpaintSketch:
    image: Image.Image  # RGB init image: the original with the (softened) colours where painted
    mask: Image.Image  # "L", 255 where the painted picture differs from the original, else 0


def flatten(background: Image.Image, layers: Sequence[Image.Image]) -> Image.Image:
    """The picture as the editor shows it: each painted layer (RGBA) laid over the background, in order."""
    out = background.convert("RGBA")
    for i, layer in enumerate(layers):
        if layer.size != out.size:
            raise RequestError(
                "init_images",
                f"painted layer {i} is {layer.size[0]}x{layer.size[1]} but the picture is "
                f"{out.size[0]}x{out.size[1]}",
            )
        out = Image.alpha_composite(out, layer.convert("RGBA"))
    return out.convert("RGB")


def painted_mask(original: Image.Image, painted: Image.Image) -> Image.Image | None:
    """255 where `painted` differs from `original` in any channel, 0 elsewhere; None where nothing does."""
    if painted.size != original.size:
        raise RequestError(
            "init_images", f"the painted picture is {painted.size}, the original {original.size}"
        )
    before = np.asarray(original.convert("RGB"))
    after = np.asarray(painted.convert("RGB"))
    changed = np.any(before != after, axis=-1)
    if not changed.any():
        return None
    return Image.fromarray(changed.astype(np.uint8) * 255, "L")


def sketch_init(background: Image.Image, layers: Sequence[Image.Image]) -> Image.Image:
    """img2img "Sketch": the init image is the picture with the strokes on it."""
    return flatten(background, layers)


def inpaint_sketch(
    original: Image.Image, painted: Image.Image, mask_blur: int, transparency: float = 0
) -> InpaintSketch:
    """Inpaint sketch: the mask where the user painted, and the init image with the painted colours
    (`transparency` per cent see-through)."""
    if mask_blur < 0:
        raise RequestError("mask_blur", f"must be 0 or more, got {mask_blur}")
    if not 0 <= transparency <= 100:
        raise RequestError("mask_alpha", f"mask transparency must be 0 to 100, got {transparency}")
    mask = painted_mask(original, painted)
    if mask is None:
        raise RequestError("mask", "paint on the picture with the brush first: nothing differs from it")
    base = original.convert("RGB")
    colours = painted.convert("RGB")
    weight = mask
    if mask_blur > 0:
        blur = ImageFilter.GaussianBlur(mask_blur)
        colours = colours.filter(blur)
        weight = mask.filter(blur)
    # the blurred weight, cut to the painted pixels: outside them the original stays byte for byte
    opacity = 1 - transparency / 100
    inside = np.where(np.asarray(mask) > 0, np.asarray(weight) * opacity, 0).round().astype(np.uint8)
    image = Image.composite(colours, base, Image.fromarray(inside, "L"))
    return InpaintSketch(image=image, mask=mask)
