"""SD3 and Flux ControlNets: tiny files in the layouts they ship in (diffusers' SD3ControlNetModel and
FluxControlNetModel as InstantX publishes them, the Flux Union one with its mode embedder, XLabs' own
key set, a diffusers folder) are listed with their family and accepted in units
(tests/test_ext_controlnet_flow*.py run them); a Flux Union unit needs its `union_control_type`, and a
job without one is refused when it is submitted, naming the field, never silently run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import FluxControlNetModel, SD3ControlNetModel
from safetensors.torch import save_file

from tests.fixtures_controlnet import extension_modules
from tests.test_ext_controlnet import drawing
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

SD3 = dict(sample_size=16, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
           num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
           out_channels=4, pos_embed_max_size=16)  # fmt: skip
FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
            axes_dims_rope=[2, 2, 4])  # fmt: skip


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def xlabs_state() -> dict[str, torch.Tensor]:
    """Part of an XLabs Flux ControlNet's keys (complete ones run: tests/test_ext_controlnet_flow.py)."""
    t = torch.zeros(4, 4)
    keys = ["img_in.weight", "txt_in.weight", "time_in.in_layer.weight", "vector_in.in_layer.weight",
            "double_blocks.0.img_attn.qkv.weight", "double_blocks.0.txt_mlp.0.weight",
            "input_hint_block.0.weight", "input_hint_block.14.weight", "pos_embed_input.weight",
            "controlnet_blocks.0.weight", "controlnet_blocks.1.weight"]  # fmt: skip
    return {k: t.clone() for k in keys}


def write_foreign(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    out = {
        "sd3": folder / "instantx-sd3-canny-tiny.safetensors",
        "flux": folder / "instantx-flux-canny-tiny.safetensors",
        "flux-union": folder / "flux-union-pro-tiny.safetensors",
        "xlabs": folder / "flux-canny-controlnet-v3-xlabs-tiny.safetensors",
    }
    save_file(_state(SD3ControlNetModel(**SD3)), str(out["sd3"]))
    save_file(_state(FluxControlNetModel(**FLUX)), str(out["flux"]))
    save_file(_state(FluxControlNetModel(**FLUX, num_mode=3)), str(out["flux-union"]))
    save_file(xlabs_state(), str(out["xlabs"]))
    diffusers_dir = folder / "flux-controlnet-folder-tiny"
    FluxControlNetModel(**FLUX).save_pretrained(diffusers_dir)
    out["flux-folder"] = diffusers_dir / "diffusion_pytorch_model.safetensors"
    assert json.loads((diffusers_dir / "config.json").read_text())["_class_name"] == "FluxControlNetModel"
    return out


FAMILIES = {
    "sd3": "SD3 (SD3ControlNetModel)",
    "flux": "Flux (InstantX (FluxControlNetModel))",
    "flux-union": "Flux (InstantX Union (FluxControlNetModel))",
    "xlabs": "Flux (XLabs)",
    "flux-folder": "Flux (FluxControlNetModel)",
}


@pytest.fixture(scope="module")
def data(
    tiny_files: dict[str, Path], tiny_controlnet_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    data = tmp_path_factory.mktemp("foreign-cn")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    (ckpts / tiny_files["sd1"].name).symlink_to(tiny_files["sd1"])
    sd1 = tiny_controlnet_files["sd1", "diffusers"]
    (data / "models" / "ControlNet").mkdir()
    (data / "models" / "ControlNet" / sd1.name).symlink_to(sd1)
    return data


@pytest.fixture(scope="module")
def files(data: Path) -> dict[str, Path]:
    return write_foreign(data / "models" / "ControlNet")


@pytest.fixture(scope="module")
def cn(data: Path, files: dict) -> SimpleNamespace:
    return extension_modules(data)


def test_sd3_and_flux_controlnets_are_listed_with_their_family(
    cn: SimpleNamespace, data: Path, files: dict[str, Path]
) -> None:
    listed = {m.path: m for m in cn.models.list_models(data / "models")}
    assert set(files.values()) <= set(listed)
    out = cn.routes.model_list(data / "models")
    families = out["model_family"]
    for kind, path in files.items():
        assert families[listed[path].title] == FAMILIES[kind], kind
    sd1 = next(m for m in listed.values() if m.name.startswith("tiny-cn-sd1"))
    assert sd1.title in out["model_list"] and sd1.title not in families  # SD1 ControlNets: no note


WIRED = ("sd3", "flux", "flux-folder")


def test_a_flux_union_unit_needs_its_control_type(cn: SimpleNamespace, data: Path, files: dict) -> None:
    models = cn.models.list_models(data / "models")
    title = {kind: next(m.title for m in models if m.path == path) for kind, path in files.items()}
    sd1 = next(m.title for m in models if m.name.startswith("tiny-cn-sd1"))

    def parse(model: str, **kw: object) -> object:
        [unit] = cn.units.parse_units([{"module": "canny", "model": model, **kw}], models)
        return unit

    assert parse(title["flux-union"], union_control_type="depth").union_control_type == "depth"
    assert parse(title["flux-union"], union_control_type="OpenPose").union_control_type == "pose"  # its name
    assert parse(title["flux"], union_control_type="Unknown").union_control_type == "Unknown"
    for model, kw, words in (
        (title["flux-union"], {}, "needs union_control_type"),
        (title["flux-union"], {"union_control_type": "sketch"}, "must be one of canny, tile, depth"),
        (title["flux"], {"union_control_type": "depth"}, "only Flux Union ControlNets"),
        (sd1, {"union_control_type": "depth"}, "only Flux Union ControlNets"),
    ):
        with pytest.raises(RequestError, match=words) as err:
            parse(model, **kw)
        assert err.value.field == "controlnet.args[0].union_control_type"


@pytest.mark.parametrize("kind", WIRED)
def test_a_unit_naming_a_wired_one_is_accepted_and_it_loads(
    kind: str, cn: SimpleNamespace, data: Path, files: dict
) -> None:
    models = cn.models.list_models(data / "models")
    title = next(m.title for m in models if m.path == files[kind])
    [unit] = cn.units.parse_units([{"module": "canny", "model": title}], models)
    assert unit.model == title
    model = cn.models.load_control_model(files[kind])
    assert type(model).__name__ == ("SD3ControlNetModel" if kind == "sd3" else "FluxControlNetModel")
    written = SD3 if kind == "sd3" else FLUX
    # a folder's config.json says everything; a file's weights say all but the position-embedding
    # sizes and (SD3 without q/k norms) the head split, which come from the job's transformer
    unseen = set() if kind == "flux-folder" else {"sample_size", "axes_dims_rope"}
    unseen |= {"attention_head_dim", "num_attention_heads"} if kind == "sd3" else set()
    keys = set(written) - unseen
    assert {k: model.config[k] for k in keys} == {k: written[k] for k in keys}


def test_loading_an_unwired_or_broken_one_says_why(cn: SimpleNamespace, files: dict, tmp_path: Path) -> None:
    inpaint = tmp_path / "sd3-inpaint-tiny.safetensors"  # a mask channel beside the latents
    save_file(_state(SD3ControlNetModel(**SD3, extra_conditioning_channels=1)), str(inpaint))
    with pytest.raises(cn.layout.ControlNetFileError, match="extra channels"):
        cn.models.load_control_model(inpaint)
    # xlabs has input_hint_block keys: never taken for an SD1 file (this one lacks most of its weights)
    for kind, words in (("xlabs", "not q, k and v stacked"), ("flux-union", "not one of the known Union")):
        with pytest.raises(cn.layout.ControlNetFileError, match=words):
            cn.models.load_control_model(files[kind])


def test_submitting_a_job_with_one_is_refused_before_it_runs(
    cn: SimpleNamespace, data: Path, files: dict
) -> None:
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    engine = Engine(config, manager, PluginHost.for_config(config, include_pip=False))
    title = next(m.title for m in cn.models.list_models(data / "models") if m.path == files["flux-union"])
    unit = {"module": "canny", "model": title, "image": drawing((64, 64))}
    request = Txt2ImgRequest(
        prompt="a house", width=64, height=64, steps=2, checkpoint="tiny-sd1", save_images=False,
        extension_args={"controlnet": {"_units": [unit]}},
    )  # fmt: skip
    with pytest.raises(RequestError, match="needs union_control_type") as err:
        engine.run(request)
    assert err.value.field == "extension_args.controlnet._units[0].union_control_type"


def test_an_sd3_union_controlnet_is_refused_by_name(cn: SimpleNamespace, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    sd = {**_state(SD3ControlNetModel(**SD3)), "controlnet_mode_embedder.weight": torch.zeros(4, 16)}
    save_file(sd, str(folder / "sd3-union-tiny.safetensors"))
    models = cn.models.list_models(tmp_path / "models")
    with pytest.raises(RequestError, match="not wired into generation yet") as err:
        cn.units.parse_units([{"module": "canny", "model": "sd3-union-tiny"}], models)
    assert err.value.field == "controlnet.args[0].model" and "sd3-union-tiny" in err.value.message
