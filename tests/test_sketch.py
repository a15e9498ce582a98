"""img2img Sketch and Inpaint sketch: painted layers -> init image and mask (webui.core.tasks.sketch),
the UI's reading of editor values, and an inpaint sketch through `Engine.run` on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.tasks import masks
from webui.core.tasks.inpaint import prepare_init
from webui.core.tasks.sketch import flatten, inpaint_sketch, painted_mask, sketch_init
from webui.core.types import Img2ImgRequest, RequestError

RED = (220, 30, 40, 255)


def _picture(w: int = 64, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _stroke(
    size: tuple[int, int], box: tuple[int, int, int, int], colour: tuple[int, ...] = RED
) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(box, fill=colour)
    return layer


def test_sketch_puts_the_painted_colours_into_the_init_image() -> None:
    picture = _picture()
    init = np.asarray(sketch_init(picture, [_stroke(picture.size, (10, 10, 30, 20))]))
    assert init.shape == (64, 64, 3)
    assert (init[10:21, 10:31] == RED[:3]).all()
    outside = np.ones((64, 64), bool)
    outside[10:21, 10:31] = False
    assert np.array_equal(init[outside], np.asarray(picture)[outside])


def test_sketch_with_nothing_painted_is_the_picture_itself() -> None:
    picture = _picture()
    assert np.array_equal(np.asarray(sketch_init(picture, [])), np.asarray(picture))
    blank = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    assert np.array_equal(np.asarray(sketch_init(picture, [blank])), np.asarray(picture))


def test_a_see_through_stroke_blends_with_the_picture() -> None:
    picture = Image.new("RGB", (8, 8), (0, 0, 200))
    out = flatten(picture, [_stroke((8, 8), (0, 0, 7, 7), (255, 255, 255, 128))])
    r, g, b = out.getpixel((3, 3))  # type: ignore[misc]
    assert 120 <= r <= 135 and 120 <= g <= 135 and 220 <= b <= 235


def test_a_layer_of_another_size_is_refused_naming_the_picture() -> None:
    with pytest.raises(RequestError) as e:
        flatten(_picture(), [_stroke((32, 32), (0, 0, 4, 4))])
    assert e.value.field == "init_images" and "32x32" in e.value.message


def test_the_mask_is_exactly_the_pixels_that_differ() -> None:
    picture = _picture()
    painted = flatten(
        picture, [_stroke(picture.size, (5, 40, 25, 50)), _stroke(picture.size, (50, 3, 60, 9))]
    )
    mask = np.asarray(painted_mask(picture, painted))
    expected = np.zeros((64, 64), np.uint8)
    expected[40:51, 5:26] = 255
    expected[3:10, 50:61] = 255
    assert np.array_equal(mask, expected)


def test_painting_a_pixel_its_own_colour_does_not_mask_it() -> None:
    """A1111 compares the painted picture with the original: a stroke that changes nothing is no mask."""
    picture = Image.new("RGB", (16, 16), RED[:3])
    painted = flatten(picture, [_stroke((16, 16), (0, 0, 7, 7))])
    assert painted_mask(picture, painted) is None


@pytest.mark.parametrize("blur", [0, 4])
def test_inpaint_sketch_mask_is_the_stroke_and_the_init_keeps_everything_else(blur: int) -> None:
    picture = _picture()
    box = (16, 16, 47, 47)
    painted = flatten(picture, [_stroke(picture.size, box)])
    result = inpaint_sketch(picture, painted, blur)
    painted_px = np.zeros((64, 64), bool)
    painted_px[16:48, 16:48] = True
    assert np.array_equal(np.asarray(result.mask) > 0, painted_px)
    assert set(np.unique(np.asarray(result.mask))) == {0, 255}
    init, source = np.asarray(result.image), np.asarray(picture)
    assert np.array_equal(init[~painted_px], source[~painted_px])  # unpainted: the original's bytes
    centre = init[28:36, 28:36].reshape(-1, 3)
    assert np.abs(centre.astype(int) - RED[:3]).max() <= 3  # the colour, in the middle of the stroke
    if blur == 0:
        assert (init[painted_px] == RED[:3]).all()
    else:
        # A1111's softening: the painted picture blurred, laid through the blurred mask
        weight = np.asarray(result.mask.filter(ImageFilter.GaussianBlur(blur)))
        soft = np.asarray(painted.filter(ImageFilter.GaussianBlur(blur)))
        edge = (16, 30)  # on the stroke's left edge: half the original, half the blurred colour
        w = weight[edge[1], edge[0]] / 255
        expected = soft[edge[1], edge[0]] * w + source[edge[1], edge[0]] * (1 - w)
        assert 0.3 < w < 0.8
        assert np.abs(init[edge[1], edge[0]].astype(float) - expected).max() <= 1.5


def test_inpaint_sketch_mask_is_blurred_by_mask_blur_in_the_engine() -> None:
    picture = _picture()
    result = inpaint_sketch(picture, flatten(picture, [_stroke(picture.size, (20, 20, 40, 40))]), 4)
    prepared = prepare_init(result.image, result.mask, width=64, height=64, mask_blur_x=4, mask_blur_y=4)
    assert prepared.hard_mask is not None and prepared.mask is not None
    assert np.array_equal(np.asarray(prepared.hard_mask), np.asarray(result.mask))
    assert np.array_equal(np.asarray(prepared.mask), np.asarray(masks.blur_mask(result.mask, 4, 4)))
    soft = np.asarray(prepared.mask)
    assert soft[30, 30] == 255 and 0 < soft[30, 18] < 255 and soft[30, 2] == 0


@pytest.mark.parametrize("transparency", [25, 60, 100])
def test_mask_transparency_fades_the_colour_and_keeps_the_whole_mask(transparency: int) -> None:
    picture = _picture()
    painted = flatten(picture, [_stroke(picture.size, (16, 16, 47, 47))])
    opaque = inpaint_sketch(picture, painted, 0)
    faded = inpaint_sketch(picture, painted, 0, transparency)
    # the mask does not fade: the painted pixels are repainted at any transparency
    assert np.array_equal(np.asarray(faded.mask), np.asarray(opaque.mask))
    source = np.asarray(picture).astype(float)
    init = np.asarray(faded.image).astype(float)
    inside = np.asarray(opaque.mask) > 0
    opacity = 1 - transparency / 100
    expected = np.asarray(RED[:3], float) * opacity + source * (1 - opacity)
    assert np.abs(init[inside] - expected[inside]).max() <= 1.0
    assert np.array_equal(init[~inside], source[~inside])


def test_mask_transparency_out_of_range_names_the_field() -> None:
    picture = _picture()
    painted = flatten(picture, [_stroke(picture.size, (1, 1, 5, 5))])
    for bad in (-1, 100.5):
        with pytest.raises(RequestError) as e:
            inpaint_sketch(picture, painted, 4, bad)
        assert e.value.field == "mask_alpha" and str(bad) in e.value.message


def test_inpaint_sketch_with_nothing_painted_is_an_error_naming_the_mask() -> None:
    picture = _picture()
    with pytest.raises(RequestError) as e:
        inpaint_sketch(picture, picture.copy(), 4)
    assert e.value.field == "mask" and "paint" in e.value.message


def test_the_ui_reads_the_editor_value_in_sketch_mode_only() -> None:
    from webui.ui import sketch_ui

    picture = _picture()
    layer = np.asarray(_stroke(picture.size, (0, 0, 9, 9)))
    background = np.asarray(picture.convert("RGBA"))
    values = {
        "_mode": sketch_ui.SKETCH,
        "_sketch": {"background": background, "layers": [layer]},
        "mask_blur": 0,
    }
    assert sketch_ui.sketching(values) and not sketch_ui.sketching({"_mode": sketch_ui.PLAIN})
    init = np.asarray(sketch_ui.sketch_picture(values))
    assert (init[:10, :10] == RED[:3]).all() and np.array_equal(init[20:], np.asarray(picture)[20:])
    image, mask = sketch_ui.inpaint_sketch_inputs(values)
    assert np.asarray(mask)[:10, :10].min() == 255 and np.asarray(mask)[10:].max() == 0
    assert (np.asarray(image)[:10, :10] == RED[:3]).all()
    half, _ = sketch_ui.inpaint_sketch_inputs({**values, "_mask_alpha": 50})  # the tab's slider
    half_px = np.asarray(half)[:10, :10].astype(int)
    expected = (np.asarray(RED[:3]) + np.asarray(picture)[:10, :10].astype(int)) / 2
    assert np.abs(half_px - expected).max() <= 1
    with pytest.raises(RequestError) as e:
        sketch_ui.inpaint_sketch_inputs({**values, "_mask_alpha": "lots"})
    assert e.value.field == "mask_alpha"
    with pytest.raises(RequestError) as e:
        sketch_ui.sketch_picture({"_mode": sketch_ui.SKETCH, "_sketch": {"background": None, "layers": []}})
    assert e.value.field == "init_images"


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


def test_an_inpaint_sketch_changes_nothing_outside_the_painted_pixels(
    manager: ModelManager, tmp_path: Path
) -> None:
    engine = Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out"), manager)
    picture = _picture()
    painted = flatten(picture, [_stroke(picture.size, (20, 24, 44, 40))])
    sketch = inpaint_sketch(picture, painted, 4)
    request = Img2ImgRequest(
        prompt="a red patch", steps=3, seed=11, width=64, height=64, checkpoint="tiny-sd1",
        init_images=(sketch.image,), mask=sketch.mask, mask_blur=4, denoising_strength=0.9,
    )  # fmt: skip
    result = engine.run(request)
    out, source = np.asarray(result.images[0].image), np.asarray(picture)
    outside = np.asarray(sketch.mask) == 0
    assert np.array_equal(out[outside], source[outside])
    assert not np.array_equal(out[~outside], source[~outside])
    assert result.images[0].path is not None and result.images[0].path.is_file()
    assert "Mask blur: 4" in result.images[0].infotext


def test_detect_size_reads_the_picture_in_the_sub_tab_in_front() -> None:
    from webui.ui import sketch_ui

    fn, inputs = sketch_ui.detect_size({"_mode": "m", "_init_image": "p", "_sketch": "s"}, "_init_image")
    assert inputs == ["m", "p", "s"]
    plain, sketch = Image.new("RGB", (96, 64)), {"background": np.zeros((72, 200, 4), np.uint8), "layers": []}
    assert fn(sketch_ui.PLAIN, plain, sketch) == (96, 64)
    assert fn(sketch_ui.SKETCH, plain, sketch) == (200, 72)
