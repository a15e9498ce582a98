"""Input images: every bad or unusual image gives a clear error naming the field, or a correct conversion."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from webui.core.tasks.input_images import (
    decode_base64,
    init_image_hash,
    open_image,
    sanitize_image,
    sanitize_mask,
)
from webui.core.types import RequestError


def _png(image: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its header claiming another size (a decompression bomb's trick), CRC fixed."""
    assert png[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


def _raises(field: str, fn: object, *args: object, **kw: object) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    assert info.value.field == field
    return info.value


# -- bytes -------------------------------------------------------------------------------------------------


def test_a_good_png_opens() -> None:
    img = Image.new("RGB", (9, 7), (10, 20, 30))
    got = open_image(_png(img), "init_images[0]")
    assert got.size == (9, 7) and got.getpixel((3, 3)) == (10, 20, 30)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"<html><script>alert(1)</script></html>", b'<svg xmlns="x"/>'],
)
def test_non_images_are_refused_naming_the_field(data: bytes) -> None:
    _raises("init_images[0]", open_image, data, "init_images[0]")


def test_truncated_png_is_refused() -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _png(noisy)
    err = _raises("mask", open_image, data[: len(data) // 2], "mask")
    assert "truncated" in err.message or "damaged" in err.message


def test_bomb_is_refused_before_decoding_and_pil_global_is_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    bomb = _with_ihdr_size(_png(Image.new("L", (8, 8))), 30_000, 30_000)  # 900M pixels claimed
    _raises("init_images[0]", open_image, bomb, "init_images[0]")  # PIL's own bomb check
    small = _with_ihdr_size(_png(Image.new("L", (8, 8))), 9_000, 9_000)  # under PIL's, over ours
    err = _raises("init_images[0]", open_image, small, "init_images[0]")
    assert "81000000" in err.message
    _raises("mask", open_image, _png(Image.new("RGB", (100, 100))), "mask", max_pixels=5_000)
    assert open_image(_png(Image.new("RGB", (100, 100))), "mask", max_pixels=10_000).size == (100, 100)
    assert before == Image.MAX_IMAGE_PIXELS


def test_base64_with_and_without_data_prefix() -> None:
    img = Image.new("RGB", (5, 4), (200, 0, 0))
    b64 = base64.b64encode(_png(img)).decode()
    assert decode_base64(b64, "init_images[0]").getpixel((0, 0)) == (200, 0, 0)
    assert decode_base64("data:image/png;base64," + b64, "init_images[0]").size == (5, 4)
    _raises("mask", decode_base64, "%%%%", "mask")


def test_first_frame_of_an_animation() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    got = sanitize_image(open_image(buf.getvalue(), "init_images[0]"), "init_images[0]")
    assert got.getpixel((2, 2)) == (255, 0, 0)


# -- colour modes --------------------------------------------------------------------------------------------


def test_cmyk_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=100)
    got = sanitize_image(open_image(buf.getvalue(), "init_images[0]"), "init_images[0]")
    assert got.mode == "RGB"
    r, g, b = got.getpixel((4, 4))  # type: ignore[misc]
    assert r > 240 and g < 15 and b < 15


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    arr = np.full((6, 6), 32896, dtype=np.uint16)  # 50% grey in 16 bits
    arr[0, 0] = 65535
    img = open_image(_png(Image.fromarray(arr)), "init_images[0]")
    assert img.mode.startswith("I")
    got = sanitize_image(img, "init_images[0]")
    assert got.mode == "RGB"
    assert got.getpixel((3, 3)) == (128, 128, 128)  # 32896 >> 8; PIL's convert would clip to 255
    assert got.getpixel((0, 0)) == (255, 255, 255)


def test_32_bit_int_and_float_grey() -> None:
    i32 = Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.int32), "I")
    assert sanitize_image(i32, "x").getpixel((1, 1)) == (127, 127, 127)
    small = Image.fromarray(np.full((4, 4), 100, dtype=np.int32), "I")  # already 8-bit data
    assert sanitize_image(small, "x").getpixel((1, 1)) == (100, 100, 100)
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F")
    assert sanitize_image(f, "x").getpixel((1, 1)) == (128, 128, 128)


def test_palette_with_transparency_goes_on_white() -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0  # index 0 (blue) transparent
    got = sanitize_image(open_image(_png(p, transparency=0), "init_images[0]"), "init_images[0]")
    assert got.getpixel((0, 0)) == (255, 255, 255)
    assert got.getpixel((1, 1)) == (0, 0, 0)
    plain = Image.new("P", (2, 2), 0)
    plain.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    assert sanitize_image(plain, "x").getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    img = rgba.convert(mode)
    got = sanitize_image(open_image(_png(img), "x"), "x")
    assert got.mode == "RGB"
    assert all(abs(c - 127) <= 1 for c in got.getpixel((2, 2)))  # type: ignore[union-attr]


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half black
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    opened = open_image(_png(img, exif=exif), "init_images[0]")
    assert opened.size == (40, 20)
    got = sanitize_image(opened, "init_images[0]")
    assert got.size == (20, 40)
    assert np.array_equal(np.asarray(got), np.rot90(arr, k=-1))  # red on top after the turn
    assert sanitize_image(got, "x").size == (20, 40)  # idempotent: the tag is gone


def test_rgb_is_kept_exactly_and_copied() -> None:
    arr = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    got = sanitize_image(img, "x")
    assert got is not img and np.array_equal(np.asarray(got), arr)


def test_oversized_pil_image_is_refused() -> None:
    _raises("init_images[0]", sanitize_image, Image.new("L", (200, 200)), "init_images[0]", max_pixels=100)


# -- masks -------------------------------------------------------------------------------------------------


def test_mask_from_alpha_is_thresholded() -> None:
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    for x, a in enumerate((0, 128, 129, 255)):
        rgba.putpixel((x, 0), (255, 255, 255, a))
    got = sanitize_mask(rgba, (4, 1))
    assert np.asarray(got).ravel().tolist() == [0, 0, 255, 255]
    soft = sanitize_mask(rgba, (4, 1), round=False)
    assert np.asarray(soft).ravel().tolist() == [0, 128, 129, 255]


def test_opaque_rgb_mask_is_its_luminance() -> None:
    m = Image.new("RGB", (3, 3), (255, 255, 255))
    m.putpixel((0, 0), (0, 0, 0))
    got = sanitize_mask(m, (3, 3))
    assert got.mode == "L" and got.getpixel((0, 0)) == 0 and got.getpixel((1, 1)) == 255


def test_mask_of_another_size_is_resized_or_refused() -> None:
    m = Image.new("L", (32, 16), 0)
    m.paste(255, (16, 0, 32, 16))  # right half
    got = sanitize_mask(m, (64, 32))
    assert got.size == (64, 32)
    assert got.getpixel((5, 10)) == 0 and got.getpixel((60, 10)) == 255
    err = _raises("mask", sanitize_mask, m, (64, 64))
    assert "32x16" in err.message and "64x64" in err.message


def test_init_image_hash_tracks_pixels() -> None:
    a = Image.new("RGB", (4, 4), (1, 2, 3))
    b = a.copy()
    assert init_image_hash(a) == init_image_hash(b)
    assert len(init_image_hash(a)) == 32
    b.putpixel((0, 0), (1, 2, 4))
    assert init_image_hash(a) != init_image_hash(b)
