"""The detailer's ControlNet unit (ADetailer's `ad_controlnet_*` keys) through the real Engine and plugin
host: the detailer and controlnet extensions as shipped, the tiny SD1 model, the tiny SD1 ControlNet (also
under an OpenPose name, with tiny OpenPose annotator files) and a tiny YOLOv8-shaped detector whose one
box sits in the middle of the picture. The unit rides on each
region's inpaint sub-pass (plugin API 2.2: a sub-request's `extension_args` bring that extension in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import webui.plugins.api as api
from tests.fixtures_annotators import annotator_modules, write_annotators
from tests.fixtures_detailer import save_tiny_yolo, yolo_candidates
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

FAST: dict[str, Any] = dict(
    prompt="a face", steps=3, width=64, height=64, seed=11, checkpoint="tiny-sd1", save_images=False
)
BOX = (22, 22, 42, 42)  # the detector's box in a 64 px picture (see test_ext_detailer_http)
DILATE = 4
UNIT = {"ad_model": "face_yolov8n.pt", "ad_dilate_erode": DILATE, "ad_denoising_strength": 0.9}
CN = "tiny-cn-sd1-diffusers"
POSE_CN = "tiny-openpose-sd1"  # the same ControlNet under a name that makes ADetailer pick openpose_full


@pytest.fixture(scope="module")
def data(
    tiny_files: dict[str, Path], tiny_controlnet_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    data = tmp_path_factory.mktemp("ad-cn-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    (ckpts / tiny_files["sd1"].name).symlink_to(tiny_files["sd1"])
    (data / "models" / "ControlNet").mkdir()
    cn = tiny_controlnet_files["sd1", "diffusers"]
    (data / "models" / "ControlNet" / cn.name).symlink_to(cn)
    (data / "models" / "ControlNet" / f"{POSE_CN}{cn.suffix}").symlink_to(cn)
    write_annotators(annotator_modules(tmp_path_factory.mktemp("ad-cn-ext")), data / "models")
    (data / "models" / "adetailer").mkdir()
    save_tiny_yolo(
        data / "models" / "adetailer" / "face_yolov8n.onnx", yolo_candidates([(320, 320, 200, 200, [0.9])])
    )
    return data


@pytest.fixture(scope="module")
def engine(data: Path) -> Engine:
    torch.set_num_threads(1)
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager, PluginHost.for_config(config, include_pip=False))


def run(engine: Engine, *units: dict[str, Any]) -> tuple[np.ndarray, str]:
    args = {"detailer": {"_adetailer": [True, False, *units]}} if units else {}
    result = engine.run(Txt2ImgRequest(**FAST, extension_args=args))
    assert result.warnings == (), result.warnings
    image = result.images[0]
    return np.asarray(image.image.convert("RGB")).astype(int), image.infotext


def inside_box(changed: np.ndarray) -> bool:
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = BOX
    return bool(
        x1 - DILATE - 1 <= xs.min()
        and xs.max() <= x2 + DILATE
        and y1 - DILATE - 1 <= ys.min()
        and ys.max() <= y2 + DILATE
    )


def test_a_controlnet_unit_changes_only_the_detailed_region(engine: Engine) -> None:
    plain, _ = run(engine)
    detailed, _ = run(engine, UNIT)
    with_cn, info = run(engine, {**UNIT, "ad_controlnet_model": CN, "ad_controlnet_module": "canny"})
    changed = (with_cn != detailed).any(axis=2)
    assert changed.sum() >= 20, "the ControlNet unit did not change the detailed region"
    assert np.abs(with_cn - detailed).max() >= 3
    assert inside_box(changed), "the ControlNet unit changed pixels outside the region"
    assert np.array_equal(with_cn[~(with_cn != plain).any(axis=2)], plain[~(with_cn != plain).any(axis=2)])
    assert inside_box((with_cn != plain).any(axis=2))
    assert f"ADetailer ControlNet model: {CN}" in info and "ADetailer ControlNet module: canny" in info, info
    again, _ = run(engine, UNIT)
    assert np.array_equal(again, detailed), "the ControlNet unit leaked into the next job's detail pass"
    assert np.array_equal(run(engine)[0], plain)


def test_an_openpose_controlnet_runs_openpose_full_on_the_region(engine: Engine) -> None:
    # module "None": ADetailer's pick for an OpenPose ControlNet, openpose_full (body, hand and face
    # networks from models/ControlNet/annotators; their random weights find nobody: a black map, which
    # the ControlNet still turns into residuals)
    detailed, _ = run(engine, UNIT)
    posed, info = run(engine, {**UNIT, "ad_controlnet_model": POSE_CN})
    changed = (posed != detailed).any(axis=2)
    assert changed.sum() >= 20 and inside_box(changed)
    assert f"ADetailer ControlNet model: {POSE_CN}" in info, info


def test_zero_weight_or_late_unit_is_bit_equal_to_no_unit(engine: Engine) -> None:
    detailed, _ = run(engine, UNIT)
    zero, _ = run(engine, {**UNIT, "ad_controlnet_model": CN, "ad_controlnet_weight": 0.0})
    assert np.array_equal(zero, detailed)
    # the unit acts from 0.9 of the sub-pass's steps only: a different picture from the full-length unit
    full, _ = run(engine, {**UNIT, "ad_controlnet_model": CN, "ad_controlnet_module": "canny"})
    late, _ = run(
        engine,
        {
            **UNIT,
            "ad_controlnet_model": CN,
            "ad_controlnet_module": "canny",
            "ad_controlnet_guidance_start": 0.9,
        },
    )
    assert not np.array_equal(late, full)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"ad_controlnet_model": "no_such_controlnet"}, "ad_controlnet_model", "unknown ControlNet model"),
        ({"ad_controlnet_model": CN, "ad_controlnet_weight": 3}, "ad_controlnet_weight", "between 0 and 1"),
    ],
)
def test_bad_controlnet_fields_are_refused_naming_the_field(
    engine: Engine, change: dict[str, Any], field: str, words: str
) -> None:
    request = Txt2ImgRequest(
        **FAST, extension_args={"detailer": {"_adetailer": [True, False, {**UNIT, **change}]}}
    )
    with pytest.raises(RequestError, match=words) as err:
        engine.run(request)
    assert err.value.field == f"extension_args.detailer._adetailer[2].{field}"
    with pytest.raises(RequestError, match=words) as err:  # an A1111 client's alwayson_scripts: a 422 too
        engine.hooks.from_alwayson("detailer", [True, False, {**UNIT, **change}])  # type: ignore[attr-defined]
    assert err.value.field == f"alwayson_scripts.detailer.args[2].{field}"


def test_a_title_with_its_hash_names_the_model(engine: Engine) -> None:
    by_name, _ = run(engine, {**UNIT, "ad_controlnet_model": CN, "ad_controlnet_module": "canny"})
    by_title, _ = run(
        engine, {**UNIT, "ad_controlnet_model": f"{CN} [0123abcd]", "ad_controlnet_module": "canny"}
    )
    assert np.array_equal(by_name, by_title)


def test_work_image_is_the_masked_region_for_only_masked() -> None:
    init = Image.new("RGB", (128, 64), (200, 0, 0))
    init.paste((0, 0, 220), (64, 0, 128, 64))
    mask = Image.new("L", (128, 64), 0)
    mask.paste(255, (90, 20, 110, 40))
    request = Img2ImgRequest(prompt="x", width=64, height=64, init_images=(init,), mask=mask, mask_blur=0,
                             inpaint_full_res=True, inpaint_full_res_padding=4)  # fmt: skip
    work = np.asarray(api.img2img_work_image(request))
    assert work.shape == (64, 64, 4)  # RGBA: the mask as the pass uses it in the alpha channel
    assert work[..., 2].mean() > 200 and work[..., 0].max() < 20  # the blue right half only
    alpha = work[..., 3]
    assert alpha.max() == 255 and alpha.min() == 0 and 0.1 < (alpha > 127).mean() < 0.9  # the box, scaled up
    whole = np.asarray(
        api.img2img_work_image(Img2ImgRequest(prompt="x", width=64, height=64, init_images=(init,)))
    )
    assert whole[..., 0].max() > 150  # without "only masked": the whole picture


def test_the_accordions_controlnet_fields_make_the_same_unit(engine: Engine) -> None:
    unit = {**UNIT, "ad_controlnet_model": CN, "ad_controlnet_module": "canny", "ad_controlnet_weight": 0.8}
    sent, _ = run(engine, unit)
    fields = {"enable": True, **unit}
    result = engine.run(Txt2ImgRequest(**FAST, extension_args={"detailer": fields}))
    assert result.warnings == ()
    assert np.array_equal(np.asarray(result.images[0].image.convert("RGB")).astype(int), sent)


def test_an_inpaint_unit_on_the_pass_picture_takes_the_pass_mask(engine: Engine, data: Path) -> None:
    from tests.fixtures_controlnet import extension_modules

    cn = extension_modules(data)
    init = Image.new("RGB", (128, 64), (90, 90, 90))
    mask = Image.new("L", (128, 64), 0)
    mask.paste(255, (90, 20, 110, 40))
    unit = {"module": "inpaint_only", "model": CN}
    request = Img2ImgRequest(prompt="x", width=64, height=64, init_images=(init,), mask=mask, mask_blur=0,
                             inpaint_full_res=True, inpaint_full_res_padding=4, checkpoint="tiny-sd1",
                             extension_args={"controlnet": {"_units": [unit]}})  # fmt: skip
    received = engine.hooks.request_received(request)  # type: ignore[attr-defined]
    job = received.extension_args["controlnet"]["_job"]
    assert job.init_image.size == (64, 64) and job.init_mask.size == (64, 64)  # the crop, at the pass's size
    files = cn.models.list_models(data / "models")
    (active,) = cn.residuals.prepare_units(
        job.units, width=64, height=64, models=files, load=lambda p: None, init_image=job.init_image,
        init_mask=job.init_mask,
    )  # fmt: skip
    masked = (active.image == -1).all(dim=1)[0]  # the inpaint ControlNet reads repainted pixels as -1
    assert 0.1 < masked.float().mean() < 0.9
    canny = cn.residuals.prepare_units(
        [cn.units.ControlUnit(index=0, module="canny", model=job.units[0].model)], width=64, height=64,
        models=files, load=lambda p: None, init_image=job.init_image, init_mask=job.init_mask,
    )  # fmt: skip
    assert (canny[0].image >= 0).all()  # other preprocessors never see the mask
