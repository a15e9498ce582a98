"""Mask operations: blur, invert, the "only masked" box, fill, paste-back and exact restore."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from webui.core.tasks import masks


def _mask(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    m.paste(255, box)
    return m


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_gaussian_kernel_is_a1111s_size_and_normalised() -> None:
    for sigma, size in ((1, 7), (4, 21), (0.5, 3), (2.2, 13)):
        k = masks.gaussian_kernel(sigma)
        assert len(k) == size
        assert k.sum() == pytest.approx(1.0)
        assert np.allclose(k, k[::-1]) and k.argmax() == size // 2


def test_blur_runs_along_the_requested_axes_only() -> None:
    line = _mask(32, 32, (16, 0, 17, 32))  # one white column
    only_x = np.asarray(masks.blur_mask(line, 3, 0)).astype(int)
    assert (only_x == only_x[0]).all()  # every row the same: no vertical change
    assert only_x[0, 16] < 255 and only_x[0, 13] > 0 and only_x[0, 0] == 0
    only_y = np.asarray(masks.blur_mask(line, 0, 3))
    assert np.array_equal(only_y, np.asarray(line))  # a full-height column does not change vertically
    assert np.array_equal(np.asarray(masks.blur_mask(line, 0, 0)), np.asarray(line))


def test_blur_matches_a_direct_convolution_with_reflect_101_borders() -> None:
    m = _mask(20, 9, (0, 0, 3, 9))  # touches the left border
    got = np.asarray(masks.blur_mask(m, 2, 0)).astype(float)
    k = masks.gaussian_kernel(2)
    r = len(k) // 2
    row = np.asarray(m, dtype=float)[0]
    padded = np.concatenate([row[1 : r + 1][::-1], row, row[-r - 1 : -1][::-1]])  # reflect-101
    want = np.rint(np.convolve(padded, k, mode="valid"))
    assert np.array_equal(got[0], want)


def test_invert() -> None:
    m = _mask(4, 4, (0, 0, 2, 4))
    assert np.array_equal(np.asarray(masks.invert_mask(m)), 255 - np.asarray(m))


def test_crop_region_is_the_padded_clamped_bounding_box() -> None:
    m = _mask(100, 80, (30, 20, 40, 50))
    assert masks.crop_region(m, 0) == (30, 20, 40, 50)
    assert masks.crop_region(m, 5) == (25, 15, 45, 55)
    assert masks.crop_region(m, 40) == (0, 0, 80, 80)
    assert masks.crop_region(Image.new("L", (10, 10)), 4) is None


def test_expand_crop_region_a1111_examples() -> None:
    # A1111's docstring: a 128x32 mask region processed at 512x512 grows to 128x128.
    assert masks.expand_crop_region((100, 200, 228, 232), 512, 512, 512, 512) == (100, 152, 228, 280)
    # At the bottom edge the grown box is shifted up to stay inside.
    assert masks.expand_crop_region((100, 490, 228, 512), 512, 512, 512, 512) == (100, 384, 228, 512)
    # Taller than wide for a wide target: grows sideways, clamped at the left edge.
    assert masks.expand_crop_region((0, 0, 10, 40), 512, 256, 300, 300) == (0, 0, 80, 40)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(16, 400),
    st.integers(16, 400),
    st.data(),
    st.sampled_from([(512, 512), (512, 768), (768, 512), (64, 128)]),
)
def test_expanded_box_contains_the_region_and_stays_inside(
    iw: int, ih: int, data: st.DataObject, proc: tuple[int, int]
) -> None:
    x1 = data.draw(st.integers(0, iw - 1))
    y1 = data.draw(st.integers(0, ih - 1))
    x2 = data.draw(st.integers(x1 + 1, iw))
    y2 = data.draw(st.integers(y1 + 1, ih))
    ex1, ey1, ex2, ey2 = masks.expand_crop_region((x1, y1, x2, y2), *proc, iw, ih)
    assert 0 <= ex1 <= x1 and 0 <= ey1 <= y1 and x2 <= ex2 <= iw and y2 <= ey2 <= ih
    target = proc[0] / proc[1]
    if ex2 - ex1 < iw and ey2 - ey1 < ih:  # not limited by the image: the ratio is met to a pixel
        assert abs((ex2 - ex1) - (ey2 - ey1) * target) <= max(1.0, target)


def test_double_mask() -> None:
    m = Image.fromarray(np.array([[0, 10, 127, 128, 200]], dtype=np.uint8))
    assert np.asarray(masks.double_mask(m)).tolist() == [[0, 20, 254, 255, 255]]


def test_fill_paints_the_masked_area_from_its_surroundings_and_keeps_the_rest() -> None:
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:, :32] = (220, 30, 30)  # red left half
    arr[:, 32:] = (0, 0, 0)  # black right half, to be masked and filled
    img = Image.fromarray(arr)
    m = _mask(64, 64, (32, 0, 64, 64))
    out = np.asarray(masks.fill_masked(img, m)).astype(int)
    assert np.array_equal(out[:, :32], arr[:, :32])
    assert out[:, 40:, 0].mean() > 150 and out[:, 40:, 1].mean() < 80  # reddish, not black


def test_paste_back_whole_picture() -> None:
    gen, orig = _noise(16, 16, 1), _noise(16, 16, 2)
    m = _mask(16, 16, (0, 0, 8, 16))
    out = np.asarray(masks.paste_back(gen, orig, m))
    assert np.array_equal(out[:, :8], np.asarray(gen)[:, :8])
    assert np.array_equal(out[:, 8:], np.asarray(orig)[:, 8:])
    with pytest.raises(ValueError):
        masks.paste_back(_noise(8, 8), orig, m)


def test_paste_back_into_a_box_leaves_the_outside_alone() -> None:
    orig = _noise(100, 60, 3)
    overlay = _mask(100, 60, (40, 20, 60, 40))
    box = (30, 10, 70, 50)
    gen = Image.new("RGB", (64, 64), (0, 255, 0))  # processed at 64x64, brought back to 40x40
    out = np.asarray(masks.paste_back(gen, orig, overlay, box))
    outside = np.ones((60, 100), dtype=bool)
    outside[10:50, 30:70] = False
    assert np.array_equal(out[outside], np.asarray(orig)[outside])
    assert (out[20:40, 40:60] == (0, 255, 0)).all()


def test_restore_unmasked_is_exact() -> None:
    orig, res = _noise(20, 10, 4), _noise(20, 10, 5)
    hard = _mask(20, 10, (5, 0, 10, 10))
    out = np.asarray(masks.restore_unmasked(res, orig, hard))
    keep = np.asarray(hard) == 0
    assert np.array_equal(out[keep], np.asarray(orig)[keep])
    assert np.array_equal(out[~keep], np.asarray(res)[~keep])
    with pytest.raises(ValueError, match="sizes differ"):
        masks.restore_unmasked(_noise(8, 8), orig, hard)
