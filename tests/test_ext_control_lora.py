"""Control-LoRA files: Stability AI's layout (a `lora_controlnet` marker, low-rank `.up`/`.down` pairs over
the base UNet's encoder, full tensors for the ControlNet's own parts) made dense per job from the job's
UNet. The fixture writes a Control-LoRA for the tiny SD1 model and the dense ControlNet it stands for;
the two must give bit-equal weights and bit-equal images, and nothing may leak into the UNet or the
next job."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.fixtures_controlnet import build_tiny_controlnet, extension_modules, ldm_names
from tests.test_ext_controlnet import drawing
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.checkpoint_file import load_state_dict
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

RANK = 4
ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")
SMALL: dict[str, Any] = dict(
    prompt="a red house", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1", save_images=False
)


def write_control_lora(unet: Any, folder: Path, seed: int = 5) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A Control-LoRA over `unet` and the dense ControlNet it stands for (diffusers layout), in `folder`:
    (control-lora path, dense path, dense state dict). Encoder weights get a rank-4 difference; encoder
    biases and norms are retrained (stored full), except the attention biases and the time embedding and
    input conv, which the file leaves out (the UNet's own); the hint encoder and zero convolutions are the
    ControlNet's own parts."""
    own = build_tiny_controlnet("sd1", seed)
    names = ldm_names(own)
    unet_sd = unet.state_dict()
    gen = torch.Generator().manual_seed(seed)
    file: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    ref: dict[str, torch.Tensor] = {}
    for key, value in own.state_dict().items():
        ldm = names[key]
        if not key.startswith(ENCODER):
            file[ldm] = ref[key] = value.detach().clone()
        elif key.startswith(("conv_in.", "time_embedding.")) or ("attentions" in key and "bias" in key):
            ref[key] = unet_sd[key].clone()
        elif value.ndim >= 2:
            up = torch.randn(value.shape[0], RANK, generator=gen) * 0.2
            down = torch.randn(RANK, *value.shape[1:], generator=gen) * 0.2
            stem = ldm.removesuffix(".weight")
            file[f"{stem}.up"], file[f"{stem}.down"] = up, down
            ref[key] = unet_sd[key] + (up.flatten(1) @ down.flatten(1)).reshape(value.shape)
        else:
            file[ldm] = ref[key] = value.detach().clone()
    folder.mkdir(parents=True, exist_ok=True)
    lora_path = folder / f"control-lora-tiny-sd1-rank{RANK}.safetensors"
    dense_path = folder / "tiny-cn-sd1-dense-of-lora.safetensors"
    save_file(file, str(lora_path))
    save_file(ref, str(dense_path))
    return lora_path, dense_path, ref


@pytest.fixture(scope="module")
def data(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("control-lora-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    for arch in ("sd1", "sdxl"):
        (ckpts / tiny_files[arch].name).symlink_to(tiny_files[arch])
    return data


@pytest.fixture(scope="module")
def files(data: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    return write_control_lora(build_tiny("sd1", seed=0).unet, data / "models" / "ControlNet")


@pytest.fixture(scope="module")
def cn(data: Path, files: tuple) -> SimpleNamespace:
    mods = extension_modules(data)
    mods.control_lora = importlib.import_module(f"{mods.models.__package__}.control_lora")
    return mods


@pytest.fixture(scope="module")
def engine(data: Path, files: tuple) -> Engine:
    torch.set_num_threads(1)
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager, PluginHost.for_config(config, include_pip=False))


def title(cn: SimpleNamespace, data: Path, path: Path) -> str:
    return next(m.title for m in cn.models.list_models(data / "models") if m.path == path)


def run(engine: Engine, model: str | None = None, **kw: Any) -> np.ndarray:
    unit = {"module": "canny", "model": model, "image": drawing((64, 64)), "processor_res": 64}
    args = {"controlnet": {"_units": [unit]}} if model else {}
    result = engine.run(Txt2ImgRequest(**{**SMALL, **kw}, extension_args=args))
    assert result.warnings == (), result.warnings
    return np.asarray(result.images[0].image).astype(int)


def test_control_lora_is_made_dense_bit_equal_without_touching_the_unet(
    cn: SimpleNamespace, files: tuple
) -> None:
    lora_path, _, ref = files
    sd = load_state_dict(lora_path)
    assert cn.control_lora.is_control_lora(sd)
    weights = cn.models.build_control_model(sd, lora_path, None)
    assert isinstance(weights, cn.control_lora.ControlLoraWeights) and weights.rank == RANK
    unet = build_tiny("sd1", seed=0).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    model = cn.control_lora.dense(weights, unet, lora_path.stem)
    got = model.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(got[k], ref[k])]
    assert not any(p.is_meta for p in model.parameters()) and not model.training
    after = unet.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before), "the UNet changed"
    pointers = {t.data_ptr() for t in after.values()}
    assert not any(t.data_ptr() in pointers for t in got.values()), "the ControlNet shares the UNet's tensors"
    with pytest.raises(cn.layout.ControlNetFileError, match="Control-LoRA file"):
        cn.models.read_controlnet(lora_path)


def test_broken_or_foreign_control_loras_are_refused(cn: SimpleNamespace, files: tuple) -> None:
    lora_path = files[0]
    sd = load_state_dict(lora_path)
    unpaired = {k: v for k, v in sd.items() if not k.endswith("proj_in.down")}
    with pytest.raises(cn.layout.ControlNetFileError, match=r"pair .*proj_in\.up / \.down is incomplete"):
        cn.control_lora.read(unpaired, "broken")
    weights = cn.control_lora.read(sd, "tiny")
    with pytest.raises(cn.layout.ControlNetFileError, match="base model"):
        cn.control_lora.dense(weights, build_tiny("sdxl", seed=0).unet, "tiny")


def test_control_lora_unit_gives_the_dense_controlnets_image_and_leaks_nothing(
    cn: SimpleNamespace, data: Path, files: tuple, engine: Engine
) -> None:
    lora_path, dense_path, _ = files
    plain = run(engine)
    with_lora = run(engine, title(cn, data, lora_path))
    with_dense = run(engine, title(cn, data, dense_path))
    assert np.abs(with_lora - plain).max() >= 3, "the Control-LoRA did not change the image"
    assert np.array_equal(with_lora, with_dense), "Control-LoRA and its dense ControlNet differ"
    assert np.array_equal(run(engine), plain), "the Control-LoRA leaked into the next job"
    assert np.array_equal(run(engine, title(cn, data, lora_path)), with_lora), "a second job differs"


def test_control_lora_with_an_sdxl_checkpoint_names_the_unit_model(
    cn: SimpleNamespace, data: Path, files: tuple, engine: Engine
) -> None:
    with pytest.raises(RequestError) as err:
        run(engine, title(cn, data, files[0]), checkpoint="tiny-sdxl")
    assert "units[0].model" in err.value.field or err.value.field.endswith("model"), err.value.field
    assert "base model" in err.value.message
