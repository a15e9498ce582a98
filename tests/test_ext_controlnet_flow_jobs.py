"""SD3 and Flux ControlNet units in real jobs: the engine with the shipped extension, tiny SD3 / Flux dev /
SD1 checkpoints and tiny SD3 / Flux ControlNets in models/ControlNet (InstantX's single file and a
diffusers folder). A unit changes the picture, a zero-weight unit is no unit (bit-equal), the next job
is untouched; a ControlNet of another family is refused naming the unit and the model; the routes list
them with their family."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.fixtures_controlnet import extension_modules
from tests.fixtures_flow_controlnet import write_flow_controlnets
from tests.test_ext_controlnet import drawing
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

CHECKPOINTS = {"sd3": "tiny-flow-sd3", "flux-dev": "tiny-flow-flux-dev"}


@pytest.fixture(scope="module")
def data(
    tiny_files: dict[str, Path], tiny_controlnet_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    data = tmp_path_factory.mktemp("flow-cn-jobs")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    (ckpts / "tiny-sd1.safetensors").symlink_to(tiny_files["sd1"])
    for arch, name in CHECKPOINTS.items():
        model = build_tiny_flow(arch, seed=4)
        save(single_file(model, "comfy" if model.is_flux else "stability"), ckpts / f"{name}.safetensors")
    folder = data / "models" / "ControlNet"
    write_flow_controlnets(folder)
    sd1 = tiny_controlnet_files["sd1", "diffusers"]
    (folder / sd1.name).symlink_to(sd1)
    return data


@pytest.fixture(scope="module")
def engine(data: Path) -> Engine:
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager, PluginHost.for_config(config, include_pip=False))


@pytest.fixture(scope="module")
def cn(data: Path) -> SimpleNamespace:
    return extension_modules(data)


def _run(engine: Engine, checkpoint: str, units: list[dict[str, Any]] | None = None) -> Any:
    request = Txt2ImgRequest(
        prompt="a house", negative_prompt="blurry", width=64, height=64, steps=3, seed=21,
        checkpoint=checkpoint, save_images=False, cfg_scale=1.0 if "flux" in checkpoint else 4.0,
        extension_args={"controlnet": {"_units": units}} if units else {},
    )  # fmt: skip
    return engine.run(request).images[0]


def _unit(model: str, **kw: Any) -> dict[str, Any]:
    return {"module": "canny", "model": model, "image": drawing((64, 64)), **kw}


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.image, dtype=np.int16)


@pytest.mark.parametrize(("arch", "layout"), [("sd3", ""), ("flux-dev", "-folder")])
def test_a_unit_acts_zero_weight_is_none_and_nothing_leaks(arch: str, layout: str, engine: Engine) -> None:
    ckpt, model = CHECKPOINTS[arch], f"tiny-cn-{arch}{layout}"  # an InstantX file, a diffusers folder
    plain = _pixels(_run(engine, ckpt))
    done = _run(engine, ckpt, [_unit(model, weight=0.9)])
    assert np.abs(_pixels(done) - plain).max() > 20
    assert "ControlNet 0:" in done.infotext and model in done.infotext
    assert np.array_equal(_pixels(_run(engine, ckpt, [_unit(model, weight=0.0)])), plain)
    assert np.array_equal(_pixels(_run(engine, ckpt)), plain)  # the next job: as if none had run


@pytest.mark.parametrize(
    ("checkpoint", "model", "words"),
    [
        ("tiny-flow-flux-dev", "tiny-cn-sd3", "is an SD3 ControlNet and cannot be used with this Flux dev"),
        ("tiny-sd1", "tiny-cn-sd3", "is an SD3 ControlNet and cannot be used with this SD1"),
        ("tiny-flow-sd3", "tiny-cn-flux-dev-folder", "is a Flux ControlNet and cannot be used with this SD3"),
        ("tiny-flow-sd3", "tiny-cn-sd1-diffusers", "is not an SD3 or Flux ControlNet and cannot be used"),
    ],
)
def test_a_controlnet_of_another_family_is_refused_naming_unit_and_model(
    checkpoint: str, model: str, words: str, engine: Engine
) -> None:
    units = [_unit("tiny-cn-sd3" if "sd3" in checkpoint else "tiny-cn-flux-dev", weight=0.0), _unit(model)]
    if checkpoint == "tiny-sd1":
        units[0] = _unit("tiny-cn-sd1-diffusers", weight=0.0)
    with pytest.raises(RequestError) as err:
        _run(engine, checkpoint, units)
    assert err.value.field == "controlnet.args[1].model"  # as the SD1 / SDXL mismatch (run time)
    assert "ControlNet unit 1" in err.value.message and model in err.value.message
    assert words in err.value.message


def test_routes_list_them_with_their_family(cn: SimpleNamespace, data: Path) -> None:
    out = cn.routes.model_list(data / "models")
    titles = {t.split(" [")[0]: t for t in out["model_list"]}
    assert out["model_family"][titles["tiny-cn-sd3"]] == "SD3 (SD3ControlNetModel)"
    assert out["model_family"][titles["tiny-cn-sd3-folder"]] == "SD3 (SD3ControlNetModel)"
    assert out["model_family"][titles["tiny-cn-flux-dev"]] == "Flux (InstantX (FluxControlNetModel))"
    assert out["model_family"][titles["tiny-cn-flux-dev-folder"]] == "Flux (FluxControlNetModel)"
    assert out["model_family"][titles["tiny-cn-flux-xlabs"]] == "Flux (XLabs)"
    assert "tiny-cn-sd1-diffusers" in titles and titles["tiny-cn-sd1-diffusers"] not in out["model_family"]


def test_units_of_them_take_balanced_mode_and_no_ip_module(cn: SimpleNamespace, data: Path) -> None:
    models = cn.models.list_models(data / "models")
    [unit] = cn.units.parse_units([{"module": "canny", "model": "tiny-cn-flux-dev", "weight": 0.5}], models)
    assert unit.weight == 0.5
    with pytest.raises(RequestError) as err:
        cn.units.parse_units([{"module": "canny", "model": "tiny-cn-sd3", "control_mode": 2}], models)
    assert err.value.field == "controlnet.args[0].control_mode" and "Balanced" in err.value.message
    with pytest.raises(RequestError) as err:
        cn.units.parse_units([{"module": "ip-adapter_clip_sd15", "model": "tiny-cn-sd3"}], models)
    assert err.value.field == "controlnet.args[0].module"


def test_a_union_units_control_type_is_in_its_infotext_and_read_back(cn: SimpleNamespace, data: Path) -> None:
    models = cn.models.list_models(data / "models")
    units = cn.units.parse_units(
        [{"module": "canny", "model": "tiny-cn-flux-union", "union_control_type": "depth"},
         {"module": "canny", "model": "tiny-cn-flux-dev"}], models,
    )  # fmt: skip
    params = cn.infotext.infotext_params(units)
    assert "Union Control Type: depth" in params["ControlNet 0"]
    assert "Union Control Type" not in params["ControlNet 1"]  # written for Union units only
    back = cn.infotext.units_from_params(params)
    assert back[0]["union_control_type"] == "depth" and "union_control_type" not in back[1]
    assert [u.union_control_type for u in cn.units.parse_units(list(back.values()), models)] == [
        "depth",
        "Unknown",
    ]
