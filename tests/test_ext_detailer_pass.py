"""The detail pass through `Engine.run` on the tiny SD1 model, on a real photo with a face."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_detailer import astronaut, extension_modules, save_tiny_yolo, yolo_candidates
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import Img2ImgRequest, Txt2ImgRequest

FIRST = Txt2ImgRequest(
    prompt="a portrait", negative_prompt="blurry", steps=3, seed=7, width=64, height=64, checkpoint="tiny-sd1"
)


@pytest.fixture(scope="module")
def ad(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return extension_modules(tmp_path_factory.mktemp("ad-ext"))


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    manager = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    manager.refresh()
    out = tmp_path_factory.mktemp("outputs")
    return Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), manager)


class Runner:
    """Runs each sub-request on the engine and keeps it (what the plugin API's runner will do)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.requests = engine, []

    def __call__(self, request: Img2ImgRequest) -> Image.Image:
        self.requests.append(request)
        return self.engine.run(request).images[0].image


def _detail(ad: SimpleNamespace, engine: Engine, image: Image.Image, args: list, **kw: object) -> tuple:
    runner = Runner(engine)
    result = ad.detail.detail_image(
        image, FIRST, ad.units.parse_args(args), find=ad.detectors.find_detector, run=runner, **kw
    )
    return result, runner


def test_detail_changes_only_the_dilated_face_box(ad: SimpleNamespace, engine: Engine) -> None:
    photo = astronaut()
    unit = {"ad_model": "opencv_face", "ad_dilate_erode": 8, "ad_denoising_strength": 0.9, "ad_mask_blur": 4}
    result, runner = _detail(ad, engine, photo, [True, False, unit])
    (report,) = result.reports
    assert result.changed and report.regions_run == 1 and len(runner.requests) == 1
    x1, y1, x2, y2 = report.detections[0].box
    assert report.masks[0].getbbox() == (x1 - 3, y1 - 3, x2 + 4, y2 + 4)  # 8x8 kernel, centre (4, 4)
    before, after = np.asarray(photo), np.asarray(result.image)
    assert after.shape == before.shape
    inside = np.asarray(ad.detail.union_mask(result.reports, photo.size)) > 0
    assert np.array_equal(after[~inside], before[~inside])  # byte-identical outside the dilated mask
    assert np.abs(after[inside].astype(int) - before[inside]).mean() > 5  # the face was repainted
    sub = runner.requests[0]
    assert sub.inpaint_full_res and sub.inpaint_full_res_padding == 32 and sub.mask_blur_x == 4
    assert (sub.width, sub.height, sub.steps, sub.seed) == (64, 64, 3, 7)  # the first pass's size/steps
    assert sub.denoising_strength == 0.9 and sub.prompt == "a portrait" and not sub.save_images


def test_unit_settings_reach_the_inpaint_request(ad: SimpleNamespace, engine: Engine) -> None:
    unit = {
        "ad_model": "opencv_face",
        "ad_prompt": "[PROMPT], freckles",
        "ad_negative_prompt": "ugly",
        "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": 96,
        "ad_inpaint_height": 64,
        "ad_use_steps": True,
        "ad_steps": 2,
        "ad_use_cfg_scale": True,
        "ad_cfg_scale": 3.0,
        "ad_use_sampler": True,
        "ad_sampler": "Euler a",
        "ad_inpaint_only_masked_padding": 8,
    }
    result, runner = _detail(ad, engine, astronaut(), [unit], seed=100, prompt="an astronaut")
    (sub,) = runner.requests
    assert (sub.width, sub.height, sub.steps, sub.cfg_scale) == (96, 64, 2, 3.0)
    assert sub.sampler_name == "Euler a" and sub.seed == 100 and sub.inpaint_full_res_padding == 8
    assert sub.prompt == " an astronaut , freckles" and sub.negative_prompt == "ugly"
    assert result.image.size == (512, 512)


def test_sep_prompts_seed_per_region_and_skip(ad: SimpleNamespace, engine: Engine) -> None:
    photo = astronaut()
    double = Image.new("RGB", (1024, 512))
    double.paste(photo, (0, 0))
    double.paste(photo, (512, 0))
    unit = {"ad_model": "opencv_face", "ad_prompt": "left [SEP] [SKIP]", "ad_denoising_strength": 0.8}
    result, runner = _detail(ad, engine, double, [unit])
    (report,) = result.reports
    assert len(report.masks) == 2 and report.regions_run == 1
    assert [r.prompt for r in runner.requests] == ["left"]
    merged = {**unit, "ad_prompt": "", "ad_mask_merge_invert": "Merge"}
    result, runner = _detail(ad, engine, double, [merged])
    assert len(runner.requests) == 1 and len(result.reports[0].masks) == 1
    sep = {**unit, "ad_prompt": "a [SEP] b", "ad_use_steps": True, "ad_steps": 1}
    _, runner = _detail(ad, engine, double, [sep])
    assert [(r.prompt, r.seed) for r in runner.requests] == [("a", 7), ("b", 8)]  # seed + j (ADetailer)


def test_a_yolo_onnx_model_drives_the_pass(ad: SimpleNamespace, engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "adetailer"
    save_tiny_yolo(folder / "face_yolov8n.onnx", yolo_candidates([(200, 150, 80, 100, [0.9])]))
    photo = astronaut()  # 512 -> 640: scale 1.25, no padding
    runner = Runner(engine)
    args = ad.units.parse_args([{"ad_model": "face_yolov8n.pt", "ad_dilate_erode": 0}])
    result = ad.detail.detail_image(photo, FIRST, args, find=ad.detectors.finder([folder]), run=runner)
    (report,) = result.reports
    assert [d.box for d in report.detections] == [(128, 80, 192, 160)]
    assert report.masks[0].getbbox() == (128, 80, 192, 160) and len(runner.requests) == 1
    inside = np.asarray(report.masks[0]) > 0
    after, before = np.asarray(result.image), np.asarray(photo)
    assert np.array_equal(after[~inside], before[~inside]) and not np.array_equal(after, before)


def test_nothing_detected_leaves_the_image_and_runs_nothing(ad: SimpleNamespace, engine: Engine) -> None:
    grey = Image.new("RGB", (128, 128), (100, 100, 100))
    result, runner = _detail(ad, engine, grey, [{"ad_model": "opencv_face"}])
    assert not result.changed and runner.requests == [] and result.image.tobytes() == grey.tobytes()
    assert result.reports[0].message == "ADetailer 1st unit: nothing detected"


def test_whole_picture_mode_keeps_the_image_size(ad: SimpleNamespace, engine: Engine) -> None:
    photo = astronaut().resize((205, 205))  # not a multiple of 8: worked at 208, brought back
    unit = {"ad_model": "opencv_face", "ad_inpaint_only_masked": False, "ad_use_steps": True, "ad_steps": 1}
    result, runner = _detail(ad, engine, photo, [unit])
    (sub,) = runner.requests
    assert (sub.width, sub.height) == (208, 208) and not sub.inpaint_full_res
    inside = np.asarray(ad.detail.union_mask(result.reports, photo.size)) > 0
    assert result.image.size == photo.size
    assert np.array_equal(np.asarray(result.image)[~inside], np.asarray(photo)[~inside])


def test_needs_a_resolved_seed(ad: SimpleNamespace) -> None:
    args = ad.units.parse_args([{"ad_model": "opencv_face"}])
    with pytest.raises(ValueError, match="resolved seed"):
        ad.detail.detail_image(
            astronaut(), Txt2ImgRequest(), args, find=ad.detectors.find_detector, run=lambda r: r
        )


def test_skip_img2img_details_the_init_image(ad: SimpleNamespace) -> None:
    photo, decoded = astronaut(), Image.new("RGB", (64, 64))
    i2i = Img2ImgRequest(init_images=(photo,))
    skip = ad.units.parse_args([True, True, {"ad_model": "opencv_face"}])
    assert ad.detail.source_image(skip, i2i, decoded) is photo
    assert ad.detail.source_image(skip, FIRST, decoded) is decoded  # txt2img has no init image
    keep = ad.units.parse_args([True, False, {"ad_model": "opencv_face"}])
    assert ad.detail.source_image(keep, i2i, decoded) is decoded
