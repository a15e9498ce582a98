"""Images in API payloads: base64 in (with limits), base64 PNG out (with infotext embedded).

Accepted: plain base64, or a `data:image/...;base64,` URL. Refused with a RequestError naming the field:
image URLs (http, https, file, ...: we never fetch), bad base64, payloads over the byte limit, files
Pillow cannot read as a raster image (HTML, SVG...), and images with more pixels than the limit
(a decompression bomb is refused from its header, before any pixel is decoded).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from webui.core.outputs.saving import PARAMETERS_KEY
from webui.core.types import RequestError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^file:", re.ASCII | re.IGNORECASE)
_DATA = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*),", re.ASCII)
_WHITESPACE = re.compile(r"\s+")
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF"})


def decode_base64(data: object, field: str, *, max_bytes: int) -> bytes:
    """The bytes of a base64 string or `data:` URL; RequestError(field) for anything else."""
    if not isinstance(data, str):
        raise RequestError(field, "must be a base64-encoded image (a string)")
    text = data.strip()
    if _URL.match(text):
        raise RequestError(field, "image URLs are not accepted; send the image itself, base64-encoded")
    if text[:5].lower() == "data:":
        match = _DATA.match(text)
        if match is None or "base64" not in [p.strip().lower() for p in match.group(2).split(";")]:
            raise RequestError(field, "a data: URL must be of the form data:image/png;base64,<data>")
        if not match.group(1).lower().startswith("image/"):
            raise RequestError(field, f"a data: URL must hold an image, not {match.group(1)!r}")
        text = text[match.end() :]
    text = _WHITESPACE.sub("", text)
    if len(text) // 4 * 3 > max_bytes:
        raise RequestError(field, f"image is larger than the limit of {max_bytes} bytes")
    if not text:
        raise RequestError(field, "is empty; expected a base64-encoded image")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, f"is not valid base64: {e}") from e


def open_image(raw: bytes, field: str, *, max_pixels: int) -> Image.Image:
    """A fully decoded image from file bytes; RequestError(field) for unreadable or oversized images."""
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
        if image.format not in ALLOWED_FORMATS:
            raise RequestError(field, f"unsupported image format {image.format}; send PNG, JPEG or WebP")
        w, h = image.size
        if w * h > max_pixels:
            raise RequestError(field, f"image is {w}x{h}: more than the limit of {max_pixels} pixels")
        image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # beyond Pillow's own limit
        raise RequestError(field, f"image refused as too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise RequestError(field, "is not a readable image (send a PNG, JPEG, WebP, BMP or GIF file)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise RequestError(field, f"is not a readable image: {e}") from e
    return image


def decode_image(data: object, field: str, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """base64 / data: URL -> PIL image, every check applied."""
    return open_image(decode_base64(data, field, max_bytes=max_bytes), field, max_pixels=max_pixels)


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    info = None
    if infotext:
        info = PngInfo()
        info.add_itxt(PARAMETERS_KEY, infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def file_b64(path: Path) -> str:
    """A saved image file, base64-encoded as it is on disk (its infotext chunk included)."""
    return b64(path.read_bytes())


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The image's text metadata (PNG tEXt/iTXt/zTXt), as strings."""
    out: dict[str, str] = {}
    chunks = dict(image.info)
    chunks.update(getattr(image, "text", {}) or {})
    for key, value in chunks.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, bytes) and key not in ("exif", "icc_profile", "xmp"):
            out[str(key)] = value.decode("utf-8", errors="replace")
    return out
