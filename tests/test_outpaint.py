"""Outpainting: the canvas geometry, the fill, the mask, and a full run on the tiny SD1 model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.prompts.encode import encode_prompts
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import make_scheduler
from webui.core.tasks import img2img
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.inpaint import finish_image, prepare_init
from webui.core.tasks.outpaint import canvas_geometry, extend_canvas


def _picture(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("size", "pixels", "dirs", "expected"),
    [
        ((64, 64), 32, ("left", "right", "up", "down"), (128, 128, 32, 32)),
        ((64, 64), 32, ("left",), (96, 64, 32, 0)),
        ((64, 64), 16, ("down",), (64, 80, 0, 0)),
        # 50 + 20 + 20 = 90 -> 96: the surplus 46 shared half and half; 30 + 20 = 50 -> 56, all on top.
        ((50, 30), 20, ("left", "right", "up"), (96, 56, 23, 26)),
        # only vertical growth of a width that is not a multiple of 8: the surplus goes right
        ((60, 64), 8, ("up",), (64, 72, 0, 8)),
        ((64, 64), 0, ("left",), (64, 64, 0, 0)),
    ],
)
def test_canvas_geometry(
    size: tuple[int, int], pixels: int, dirs: tuple[str, ...], expected: tuple[int, int, int, int]
) -> None:
    g = canvas_geometry(*size, pixels, dirs)
    assert (g.width, g.height, g.left, g.top) == expected
    assert g.width % 8 == 0 and g.height % 8 == 0


def test_canvas_geometry_rejects_unknown_sides() -> None:
    with pytest.raises(ValueError, match="sideways"):
        canvas_geometry(64, 64, 8, ("sideways",))


@pytest.mark.parametrize("fill", ["edge", "average"])
def test_original_kept_exactly_and_mask_exactly_on_the_new_area(fill: str) -> None:
    img = _picture(50, 30)
    out = extend_canvas(img, 20, ("left", "right", "up"), fill=fill, noise=0.3, seed=1)
    g = out.geometry
    assert out.image.size == (g.width, g.height) == out.mask.size
    box = g.original_box(img.size)
    assert np.array_equal(np.asarray(out.image.crop(box)), np.asarray(img))
    m = np.asarray(out.mask)
    inside = np.zeros_like(m, dtype=bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    assert (m[inside] == 0).all() and (m[~inside] == 255).all()


def test_edge_fill_continues_the_border() -> None:
    img = Image.new("RGB", (32, 32), (200, 40, 40))
    img.paste((40, 40, 200), (0, 0, 32, 16))  # top half blue, bottom half red
    out = np.asarray(extend_canvas(img, 16, ("left",), fill="edge").image).astype(int)
    assert out[4, 14, 2] > 150 and out[28, 14, 0] > 150  # next to the border: its colours
    far = out[4, 0]
    assert abs(far - out[4, 15]).sum() > 0  # fading to the mean with distance


def test_average_fill_and_seeded_noise() -> None:
    img = _picture(32, 32, 2)
    mean = np.asarray(img).reshape(-1, 3).mean(axis=0)
    flat = np.asarray(extend_canvas(img, 8, ("right",), fill="average").image).astype(int)
    assert np.abs(flat[:, 35] - mean).max() <= 1
    a = extend_canvas(img, 8, ("right",), noise=0.5, seed=3).image
    b = extend_canvas(img, 8, ("right",), noise=0.5, seed=3).image
    c = extend_canvas(img, 8, ("right",), noise=0.5, seed=4).image
    assert np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))


def test_a_user_mask_is_kept_on_the_canvas() -> None:
    img = _picture(32, 32)
    user = Image.new("L", (32, 32), 0)
    user.paste(255, (10, 10, 20, 20))
    out = extend_canvas(img, 8, ("left",), mask=user)
    m = np.asarray(out.mask)
    assert (m[10:20, 18:28] == 255).all() and m[5, 12] == 0 and (m[:, :8] == 255).all()


@pytest.fixture
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_one_thread")
def test_outpaint_run_has_the_extended_size_and_keeps_the_original(tiny_files: dict[str, Path]) -> None:
    parts = load_model(tiny_files["sd1"], Precision())
    img = _picture(64, 48, 5)
    out = extend_canvas(img, 16, ("left", "up"), fill="edge", noise=0.1, seed=9)
    w, h = out.geometry.width, out.geometry.height
    assert (w, h) == (80, 64)
    prep = prepare_init(out.image, out.mask, width=w, height=h, mask_blur_x=4, mask_blur_y=4)
    assert prep.mask is not None
    shape, seeds = (4, h // 8, w // 8), [11]
    init = img2img.encode_init(parts, [prep.image])
    sched = make_scheduler("Euler a", None, parts.scheduler_config, noise_seeds=seeds)
    latents = img2img.run_img2img(
        parts, sched, init, initial_noise(shape, seeds, seeds, 0.0, (-1, -1)),
        NoiseSource.for_seeds(shape, seeds).generator_list(),
        encode_prompts(parts, ["a landscape"]), encode_prompts(parts, [""]),
        steps=4, strength=0.9, cfg_scale=7.0, width=w, height=h,
        mask_latent=img2img.latent_mask(prep.mask, h // 8, w // 8),
    )  # fmt: skip
    result = finish_image(prep, to_pil(decode(parts.vae, latents))[0])
    assert result.size == (80, 64)
    box = out.geometry.original_box(img.size)
    assert np.array_equal(np.asarray(result.crop(box)), np.asarray(img))
    assert not np.array_equal(np.asarray(result)[:16], np.asarray(out.image)[:16])  # the new area changed
