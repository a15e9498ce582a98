"""A1111's resize modes: sizes, what is cropped, what is filled, and the latent upscale of mode 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from webui.core.tasks.resize import (
    CROP_AND_RESIZE,
    JUST_RESIZE,
    LATENT_UPSCALE,
    RESIZE_AND_FILL,
    resize_image,
    resize_latents,
)


def _stripes(w: int, h: int) -> Image.Image:
    """Three vertical bands: red | green | blue."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 3] = (255, 0, 0)
    arr[:, w // 3 : 2 * w // 3] = (0, 255, 0)
    arr[:, 2 * w // 3 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_just_resize_stretches() -> None:
    out = resize_image(JUST_RESIZE, _stripes(90, 30), 64, 64)
    assert out.size == (64, 64)
    assert out.getpixel((2, 32))[0] > 200 and out.getpixel((61, 32))[2] > 200  # type: ignore[index]


def test_crop_and_resize_keeps_the_centre() -> None:
    # 90x30 -> 64x64: scaled to 192x64, the middle 64 columns kept: the green band only.
    out = np.asarray(resize_image(CROP_AND_RESIZE, _stripes(90, 30), 64, 64)).astype(int)
    assert out.shape == (64, 64, 3)
    assert (out[:, 8:56, 1] > 200).all() and (out[:, 8:56, 0] < 40).all() and (out[:, 8:56, 2] < 40).all()


def test_resize_and_fill_fits_and_stretches_the_edges_into_the_bars() -> None:
    # 90x30 -> 64x64: scaled to 64x21 (64 * 30 // 90), centred at y = 32 - 10 = 22; bars of 22 and 21 rows.
    src = _stripes(90, 30)
    out = np.asarray(resize_image(RESIZE_AND_FILL, src, 64, 64)).astype(int)
    inner = np.asarray(src.resize((64, 21), resample=Image.Resampling.LANCZOS)).astype(int)
    assert np.array_equal(out[22:43], inner)
    # The bars repeat the edge rows (stretched), so a column keeps its band colour top to bottom.
    for x, channel in ((5, 0), (32, 1), (60, 2)):
        assert (out[:, x, channel] > 200).all(), f"column {x} lost its colour in a bar"


def test_resize_and_fill_with_bars_left_and_right() -> None:
    arr = np.zeros((60, 20, 3), dtype=np.uint8)
    arr[:, 0] = (255, 255, 255)  # the left edge column is white
    out = np.asarray(resize_image(RESIZE_AND_FILL, Image.fromarray(arr), 64, 64)).astype(int)
    # scaled to 21x64 at x = 32 - 10 = 22; the left bar (22 columns) stretches the white edge column
    assert (out[:, :20].mean() > 200) and out[:, 40:].mean() < 30


def test_masks_stay_grey() -> None:
    m = Image.new("L", (30, 10), 255)
    for mode in (JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE):
        out = resize_image(mode, m, 64, 48)
        assert out.mode == "L" and out.size == (64, 48)


def test_latent_upscale_mode_acts_as_just_resize_on_pixels() -> None:
    src = _stripes(50, 40)
    assert np.array_equal(
        np.asarray(resize_image(LATENT_UPSCALE, src, 64, 64)),
        np.asarray(resize_image(JUST_RESIZE, src, 64, 64)),
    )


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="resize mode"):
        resize_image(4, _stripes(8, 8), 8, 8)


def test_upscale_callable_is_used_only_when_growing() -> None:
    calls: list[tuple[int, int]] = []

    def upscale(im: Image.Image, w: int, h: int) -> Image.Image:
        calls.append((w, h))
        return im.resize((w * 2, h * 2), resample=Image.Resampling.NEAREST)

    assert resize_image(JUST_RESIZE, _stripes(16, 16), 64, 32, upscale=upscale).size == (64, 32)
    resize_image(JUST_RESIZE, _stripes(128, 128), 64, 64, upscale=upscale)
    assert calls == [(64, 32)]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(1, 25),
    st.integers(1, 25),
    st.sampled_from([JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL]),
)
def test_every_mode_covers_the_whole_target(sw: int, sh: int, w8: int, h8: int, mode: int) -> None:
    """A white picture stays white: no row or column of the canvas is left unpainted (black).

    Request sizes are multiples of 8 (A1111's arithmetic leaves a black line for some odd sizes)."""
    w, h = w8 * 8, h8 * 8
    out = resize_image(mode, Image.new("RGB", (sw, sh), (255, 255, 255)), w, h)
    assert out.size == (w, h)
    assert int(np.asarray(out).min()) == 255


def test_resize_latents() -> None:
    z = torch.randn(2, 4, 8, 6)
    assert resize_latents(z, 48, 64) is z
    up = resize_latents(z, 96, 128)
    assert up.shape == (2, 4, 16, 12)
    const = torch.full((1, 4, 8, 8), 0.25)
    assert torch.allclose(resize_latents(const, 128, 128), torch.full((1, 4, 16, 16), 0.25))
