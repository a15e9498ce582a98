"""Images in and out of a unit: base64 decoding, resize modes, pixel-perfect resolution, control tensors."""

from __future__ import annotations

import base64
import binascii
import io
import math
from enum import StrEnum

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ResizeMode(StrEnum):
    """sd-webui-controlnet's resize modes (API integers 0, 1, 2 in this order)."""

    JUST_RESIZE = "Just Resize"  # stretch to the generation size
    CROP = "Crop and Resize"  # scale to cover it, centre crop (the default)
    FILL = "Resize and Fill"  # scale to fit inside it, black borders


class ImageDataError(ValueError):
    """Bytes that are not an image."""


def decode_base64_image(data: str) -> Image.Image:
    """A PIL image (loaded) from base64 text, with or without a `data:image/...;base64,` prefix."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageDataError("is not base64 text") from e
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ImageDataError(f"is not a readable image ({type(e).__name__})") from e
    return image


def pixel_perfect_resolution(image_size: tuple[int, int], target: tuple[int, int], mode: ResizeMode) -> int:
    """The preprocessor resolution at which the map needs no further scaling to fill `target` (w, h)
    under `mode`: the short side the image would have once resized to the target."""
    (w, h), (tw, th) = image_size, target
    k = min(tw / w, th / h) if mode is ResizeMode.FILL else max(tw / w, th / h)
    return int(round(k * min(w, h)))


def resize_to(image: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """`image` at exactly width x height by the unit's resize mode."""
    if image.size == (width, height):
        return image
    if mode is ResizeMode.JUST_RESIZE:
        return image.resize((width, height), Image.Resampling.LANCZOS)
    w, h = image.size
    k = max(width / w, height / h) if mode is ResizeMode.CROP else min(width / w, height / h)
    sw, sh = max(1, math.ceil(w * k - 1e-6)), max(1, math.ceil(h * k - 1e-6))
    scaled = image.resize((sw, sh), Image.Resampling.LANCZOS)
    if mode is ResizeMode.CROP:
        left, top = (sw - width) // 2, (sh - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(scaled, ((width - sw) // 2, (height - sh) // 2))
    return canvas


def control_tensor(
    control_map: Image.Image, width: int, height: int, mode: ResizeMode, gray: bool = False
) -> torch.Tensor:
    """The (1, 3, height, width) float tensor a ControlNet reads: RGB in [0, 1], as diffusers' control
    image processor makes it; an RGBA map (inpaint) has its masked pixels (alpha > 0.5) at -1.
    `gray`: one channel (PIL's "L" conversion), for the T2I-Adapters that read one."""
    sized = resize_to(control_map, width, height, mode)
    rgb = np.asarray(sized.convert("L" if gray else "RGB")).astype(np.float32) / 255.0
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if sized.mode == "RGBA":
        masked = np.asarray(sized.getchannel("A")).astype(np.float32) / 255.0 > 0.5
        rgb[masked] = -1.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
