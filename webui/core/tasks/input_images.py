"""Input images made safe and uniform before they reach the pipeline.

Every init image and mask goes through here, whether it came from the browser, the API (base64) or a
stored job:

- bytes that are not an image (truncated, corrupt, HTML/SVG) -> RequestError naming the field;
- decompression bombs: the pixel count in the header is checked against `max_pixels` *before* the
  pixels are decoded (a per-call limit: PIL's global MAX_IMAGE_PIXELS is never touched; PIL's own
  bomb error, past twice its global limit, becomes a RequestError too);
- EXIF orientation applied (ImageOps.exif_transpose), the first frame of an animation taken;
- colour: palette (with or without transparency), CMYK, YCbCr, LAB, HSV, 1-bit, grey, 16-bit and
  32-bit integer grey, float grey and anything with alpha -> 8-bit RGB, transparent pixels composited
  on white (A1111's default img2img background colour);
- masks -> 8-bit "L" (white = repaint). An RGBA mask with any transparency means its alpha channel
  (thresholded at 128 when `round`), as A1111's create_binary_mask; a mask of another size than the
  image is resized to it when the aspect ratios agree and refused otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from webui.core.types import MAX_INIT_PIXELS, RequestError, check_mask_size

BACKGROUND: Final = (255, 255, 255)
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def decode_base64(text: str, field: str, *, max_pixels: int = MAX_INIT_PIXELS) -> Image.Image:
    """An image from base64 text, with or without a `data:image/...;base64,` prefix (A1111's API)."""
    if not isinstance(text, str):
        raise RequestError(field, "must be a base64-encoded image")
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, f"is not valid base64: {e}") from e
    return open_image(data, field, max_pixels=max_pixels)


def open_image(data: bytes, field: str, *, max_pixels: int = MAX_INIT_PIXELS) -> Image.Image:
    """Decode image bytes, refusing non-images, corrupt files and decompression bombs."""
    if not data:
        raise RequestError(field, "is empty")
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
        _check_pixels(im, field, max_pixels)
        im.seek(0)  # animations: the first frame
        im.load()
    except RequestError:
        raise
    except Image.DecompressionBombError as e:
        raise RequestError(field, f"is too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise RequestError(field, "is not an image file PIL can read (PNG, JPEG, WebP, ...)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise RequestError(field, f"is a damaged or truncated image: {e}") from e
    return im


def sanitize_image(image: Image.Image, field: str, *, max_pixels: int = MAX_INIT_PIXELS) -> Image.Image:
    """An upright 8-bit RGB copy of `image`; transparency is composited on white."""
    _check_pixels(image, field, max_pixels)
    image = _upright(image, field)
    if image.mode == "RGB":
        return image.copy()
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit_grey(image)
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def sanitize_mask(
    mask: Image.Image,
    image_size: tuple[int, int],
    field: str = "mask",
    *,
    round: bool = True,
    max_pixels: int = MAX_INIT_PIXELS,
) -> Image.Image:
    """An upright "L" mask of `image_size` (white = repaint)."""
    _check_pixels(mask, field, max_pixels)
    mask = _upright(mask, field)
    if mask.mode == "P":
        mask = mask.convert("RGBA" if "transparency" in mask.info else "RGB")
    if mask.mode in _ALPHA_MODES:
        rgba = mask.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() != (255, 255):
            out = alpha.point(lambda v: 255 if v > 128 else 0) if round else alpha
        else:
            out = rgba.convert("L")
    elif mask.mode in ("I", "F") or mask.mode.startswith("I;16"):
        out = _to_8bit_grey(mask)
    else:
        out = mask.convert("L")
    if out.size != image_size:
        check_mask_size(out.size, image_size, field)
        out = out.resize(image_size, resample=Image.Resampling.LANCZOS)
    return out


def init_image_hash(image: Image.Image) -> str:
    """A1111's `Init image hash`: the md5 of the image's raw pixel bytes."""
    return hashlib.md5(image.tobytes()).hexdigest()


def _check_pixels(image: Image.Image, field: str, max_pixels: int) -> None:
    w, h = image.size
    if w < 1 or h < 1:
        raise RequestError(field, f"is empty ({w}x{h})")
    if w * h > max_pixels:
        raise RequestError(field, f"is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")


def _upright(image: Image.Image, field: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise RequestError(field, f"has unreadable EXIF data: {e}") from e


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> "L", scaled (PIL's own convert would clip at 255).

    I;16*: the top 8 bits. "I" with values over 255: 16-bit data (a 16-bit PNG opens as "I"), / 257.
    "F": 0..1 data is scaled by 255, anything larger is clipped to 0..255.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        arr = np.asarray(image.convert("I"), dtype=np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    arr_f = np.asarray(image, dtype=np.float64)
    if mode == "F" and arr_f.size and float(np.nanmax(arr_f)) <= 1.0:
        arr_f = arr_f * 255.0
    elif mode == "I" and arr_f.size and float(arr_f.max()) > 255:
        arr_f = arr_f / 257.0
    arr_f = np.nan_to_num(arr_f, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr_f), 0, 255).astype(np.uint8), "L")
