"""Images in API payloads: base64 and data: URLs in, every kind of bad input refused naming the field."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from webui.api.images import decode_base64, decode_image, file_b64, png_bytes, text_chunks
from webui.core.outputs.saving import read_infotext
from webui.core.types import RequestError

LIMITS = dict(max_bytes=1_000_000, max_pixels=512 * 512)


def _png(size: tuple[int, int] = (16, 8), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else 0).save(buf, format="PNG")
    return buf.getvalue()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_plain_base64_and_data_url_both_decode() -> None:
    raw = _png()
    for text in (_b64(raw), f"data:image/png;base64,{_b64(raw)}", f"  {_b64(raw)}\n"):
        image = decode_image(text, "init_images.0", **LIMITS)
        assert image.size == (16, 8) and image.getpixel((0, 0)) == (255, 0, 0)


def test_missing_padding_is_tolerated_like_a1111_clients_send_it() -> None:
    text = _b64(_png()).rstrip("=")
    assert decode_image(text, "image", **LIMITS).size == (16, 8)


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1/x.png",
        "https://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "FILE:/etc/passwd",
        "ftp://example.com/a.png",
    ],
)
def test_image_urls_are_refused(value: str) -> None:
    with pytest.raises(RequestError) as e:
        decode_image(value, "init_images.0", **LIMITS)
    assert e.value.field == "init_images.0" and "URL" in e.value.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not base64 at all!!", "base64"),
        ("", "empty"),
        (12, "string"),
        ("data:text/html;base64,PGh0bWw+", "image"),
        ("data:image/png,rawdata", "base64"),
        (_b64(b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"), "readable"),
        (_b64(b"<html><body>hi</body></html>"), "readable"),
        (_b64(_png()[:40]), "readable"),  # truncated PNG
    ],
)
def test_bad_payloads_name_the_field(value: object, words: str) -> None:
    with pytest.raises(RequestError) as e:
        decode_image(value, "mask", **LIMITS)
    assert e.value.field == "mask" and words in e.value.message


def test_size_limit_is_checked_before_decoding() -> None:
    big = _b64(b"\0" * 3000)
    with pytest.raises(RequestError) as e:
        decode_base64(big, "image", max_bytes=1000)
    assert "limit" in e.value.message


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims a huge grey image (the IDAT is nowhere near complete)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(RequestError) as e:
        decode_image(_b64(_bomb_png(100_000, 100_000)), "init_images.0", **LIMITS)
    assert e.value.field == "init_images.0" and ("pixels" in e.value.message or "large" in e.value.message)
    with pytest.raises(RequestError):  # just above our limit, far below Pillow's own
        decode_image(_b64(_bomb_png(513, 512)), "init_images.0", **LIMITS)


def test_png_out_carries_infotext_and_text_chunks_read_back(tmp_path: object) -> None:
    raw = png_bytes(Image.new("RGB", (8, 8)), "a cat\nSteps: 2, Seed: 1")
    image = decode_image(_b64(raw), "image", **LIMITS)
    assert read_infotext(image) == "a cat\nSteps: 2, Seed: 1"
    assert text_chunks(image)["parameters"] == "a cat\nSteps: 2, Seed: 1"


def test_file_b64_is_the_file_as_on_disk(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "x.png"
    path.write_bytes(_png())
    assert base64.b64decode(file_b64(path)) == path.read_bytes()
