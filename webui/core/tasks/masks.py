"""Inpainting masks on PIL images: blur, invert, the "only masked" box, fill, paste-back, restore.

Masks are 8-bit "L" images: 255 = repaint, 0 = keep. What each function reproduces from A1111:

- `blur_mask`: a Gaussian blur along x, then along y, each with kernel size 2 * int(2.5 * sigma + 0.5) + 1
  and reflect-101 borders (A1111 calls cv2.GaussianBlur with these; values here are rounded to the
  nearest integer, cv2's fixed-point rounding may differ by one level).
- `crop_region` / `expand_crop_region`: the bounding box of the non-zero mask grown by the padding and
  clamped to the image, then grown to the processing width:height ratio (shifted back inside the image
  where it overflows), with A1111's integer arithmetic.
- `fill_masked`: "masked content: fill": the masked area painted with ever finer blurs of the kept
  pixels (radii 256, 64, 16, 4, 2, 0).
- `paste_back`: the generated picture (resized into the box for "only masked") under the original,
  whose alpha is the inverted overlay mask.
- `restore_unmasked` (ours, not in A1111 or diffusers): every pixel where the *unblurred* mask is 0 is
  set back to the original's exact bytes, so the area the user did not paint is never altered.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from webui.core.tasks.resize import CROP_AND_RESIZE, resize_image

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive

_FILL_PASSES: Final = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))  # (blur radius, repeats)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D kernel cv2.GaussianBlur builds for this sigma and A1111's kernel size."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k: np.ndarray = np.exp(-(x**2) / (2 * sigma * sigma))
    return k / float(k.sum())


def _blur_axis(arr: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    padded = np.pad(arr, pad, mode="reflect")  # reflect-101: the edge pixel is not repeated
    out = np.zeros_like(arr, dtype=np.float64)
    n = arr.shape[axis]
    for i, weight in enumerate(k):
        out += weight * (padded[i : i + n, :] if axis == 0 else padded[:, i : i + n])
    return out


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """A1111's mask blur: x first (if > 0), then y (if > 0), each rounded back to 8 bits."""
    arr = np.asarray(mask.convert("L"), dtype=np.float64)
    for sigma, axis in ((blur_x, 1), (blur_y, 0)):
        if sigma > 0 and arr.shape[axis] > 1:
            arr = np.clip(np.rint(_blur_axis(arr, sigma, axis)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def invert_mask(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(mask.convert("L"))


def crop_region(mask: Image.Image, pad: int = 0) -> Box | None:
    """The box around every non-zero mask pixel, grown by `pad` and clamped; None for an empty mask."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    w, h = mask.size
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, w), min(y2 + pad, h)


def _grow(lo: int, hi: int, diff: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) by `diff` split around it, then shift/clamp it into [0, limit] (A1111's order)."""
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    if hi >= limit:
        hi = limit
    return lo, hi


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """Grow `box` to the width:height ratio of the processing size, kept inside the image."""
    x1, y1, x2, y2 = box
    box_ratio = (x2 - x1) / (y2 - y1)
    target_ratio = width / height
    if box_ratio > target_ratio:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / target_ratio - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * target_ratio - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def double_mask(mask: Image.Image) -> Image.Image:
    """The whole-picture overlay mask: the blurred mask x 2, clipped (A1111's mask_for_overlay)."""
    arr = np.asarray(mask.convert("L"), dtype=np.float32) * 2
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Paint the masked area with colours spread in from the kept pixels (masked content "fill")."""
    keep = ImageOps.invert(mask.convert("L").resize(image.size))
    known = image.convert("RGB").convert("RGBA")
    known.putalpha(keep)
    premultiplied = known.convert("RGBa")  # blurs must not spread the colour of transparent pixels
    out = Image.new("RGBA", image.size)
    for radius, repeats in _FILL_PASSES:
        layer = premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(layer)
    return out.convert("RGB")


def paste_back(
    generated: Image.Image, original: Image.Image, overlay_mask: Image.Image, box: Box | None = None
) -> Image.Image:
    """`generated` where the overlay mask is white, the original where it is black, blended between.

    With a `box` ("only masked"), `generated` is the processed crop: it is brought to the box's size
    (crop and resize, as A1111) and placed there; outside the box the original shows unchanged.
    """
    base = Image.new("RGBA", original.size)
    if box is None:
        if generated.size != original.size:
            raise ValueError(f"generated image is {generated.size}, the original {original.size}")
        base.paste(generated.convert("RGB"))
    else:
        x1, y1, x2, y2 = box
        base.paste(resize_image(CROP_AND_RESIZE, generated.convert("RGB"), x2 - x1, y2 - y1), (x1, y1))
    top = original.convert("RGB").convert("RGBA")
    top.putalpha(ImageOps.invert(overlay_mask.convert("L")))
    base.alpha_composite(top)
    return base.convert("RGB")


def restore_unmasked(result: Image.Image, original: Image.Image, hard_mask: Image.Image) -> Image.Image:
    """`result` with every pixel where `hard_mask` is 0 replaced by the original's exact bytes."""
    if result.size != original.size or hard_mask.size != original.size:
        raise ValueError(
            f"sizes differ: result {result.size}, original {original.size}, mask {hard_mask.size}"
        )
    keep = np.asarray(hard_mask.convert("L")) == 0
    out = np.where(keep[..., None], np.asarray(original.convert("RGB")), np.asarray(result.convert("RGB")))
    return Image.fromarray(out.astype(np.uint8), "RGB")
