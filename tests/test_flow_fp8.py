"""fp8 (float8_e4m3fn) Flux and SD3.5 files: the transformer blocks' Linear weights stay fp8 in memory and
are upcast per layer as they run; outputs match the same file upcast at load, with and without a LoRA,
and a LoRA on fp8 layers leaves the fp8 weights untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_lora_flow import outputs, params, ref
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Components, Precision
from webui.core.models.flow_components import load_flow_components
from webui.core.models.fp8 import Fp8Linear
from webui.core.models.manager import ModelManager
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.networks.apply import NetworkCache, apply_networks
from webui.core.networks.tiny import write_tiny_flow_lora
from webui.core.types import Txt2ImgRequest

FP8 = torch.float8_e4m3fn
ARCHES = ("flux-dev", "sd3.5")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Components, Components]]:
    """{arch: (the fp8 file loaded, the same values stored as fp32: the upcast-at-load path)}."""
    root = tmp_path_factory.mktemp("fp8")
    out = {}
    for arch in ARCHES:
        layout = "comfy" if arch.startswith("flux") else "stability"
        sd = single_file(build_tiny_flow(arch, seed=8), layout)
        dit = {k for k, v in sd.items() if k.startswith("model.diffusion_model.") and v.is_floating_point()}
        fp8 = {k: v.to(FP8) if k in dit else v for k, v in sd.items()}
        upcast = {k: v.to(FP8).float() if k in dit else v for k, v in sd.items()}
        out[arch] = (
            load_flow_components(save(fp8, root / f"{arch}-fp8.safetensors"), Precision()),
            load_flow_components(save(upcast, root / f"{arch}-fp32.safetensors"), Precision()),
        )
    return out


@pytest.mark.parametrize("arch", ARCHES)
def test_fp8_blocks_stay_fp8_and_match_the_upcast_file(
    pairs: dict[str, tuple[Components, Components]], arch: str
) -> None:
    fp8, upcast = pairs[arch]
    linears = {n: m for n, m in fp8.transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    in_blocks = {n for n in linears if n.startswith(("transformer_blocks.", "single_transformer_blocks."))}
    assert in_blocks and all(isinstance(linears[n], Fp8Linear) for n in in_blocks)
    assert all(linears[n].weight.dtype == FP8 for n in in_blocks)
    others = [p.dtype for n, p in fp8.transformer.named_parameters() if n.rsplit(".", 1)[0] not in in_blocks]
    others += [linears[n].bias.dtype for n in in_blocks if linears[n].bias is not None]
    assert set(others) == {torch.float32}  # embedders, norms, biases: upcast at load
    assert fp8.dtype == torch.float32 and fp8.transformer.training is False
    assert all(not m.training for m in fp8.transformer.modules())
    fp8_bytes = sum(p.numel() * p.element_size() for p in fp8.transformer.parameters())
    fp32_bytes = sum(p.numel() * p.element_size() for p in upcast.transformer.parameters())
    block_params = sum(linears[n].weight.numel() for n in in_blocks)
    assert fp32_bytes - fp8_bytes == 3 * block_params  # 1 byte instead of 4 for each block weight
    a, b = outputs(fp8), outputs(upcast)
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHES)
def test_lora_on_fp8_layers_matches_the_upcast_file_and_leaves_fp8_alone(
    pairs: dict[str, tuple[Components, Components]], arch: str, tmp_path: Path
) -> None:
    fp8, upcast = pairs[arch]
    before, base = params(fp8), outputs(fp8)
    net = ref(write_tiny_flow_lora(tmp_path / "l.safetensors", upcast, "kohya", seed=6))
    results = []
    for model in (fp8, upcast):
        with apply_networks(model, [(net, 1.0, 0.8)], NetworkCache()) as info:
            assert info.messages == ()
            if model is fp8:
                during = params(fp8)
                changed = {k for k in before if not torch.equal(during[k], before[k])}
                assert changed and all(before[k].dtype != FP8 for k in changed)  # fp8 weights untouched
                with info.suspended():
                    assert all(torch.equal(v, base[k]) for k, v in outputs(fp8).items())
            results.append(outputs(model))
    for k in base:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(results[0][k], base[k], atol=1e-4)
    after = params(fp8)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(m.weight_delta is None for m in fp8.transformer.modules() if isinstance(m, Fp8Linear))
    assert all(torch.equal(v, base[k]) for k, v in outputs(fp8).items())


def test_an_fp8_flux_file_runs_txt2img_like_its_upcast_twin(tmp_path: Path) -> None:
    ckpts = tmp_path / "models" / "Stable-diffusion"
    sd = single_file(build_tiny_flow("flux-dev", seed=8), "comfy")
    dit = {k for k, v in sd.items() if k.startswith("model.diffusion_model.") and v.is_floating_point()}
    save({k: v.to(FP8) if k in dit else v for k, v in sd.items()}, ckpts / "fp8.safetensors")
    save({k: v.to(FP8).float() if k in dit else v for k, v in sd.items()}, ckpts / "fp32.safetensors")
    config = AppConfig.for_data_dir(tmp_path, hashing=False)
    manager = ModelManager(config, Precision())
    manager.refresh()
    engine = Engine(config, manager)
    pixels = {}
    for name in ("fp8", "fp32"):
        request = Txt2ImgRequest(
            prompt="a red apple", checkpoint=name, steps=3, width=64, height=64, seed=1, save_images=False,
            sampler_name="Euler", scheduler="Simple", cfg_scale=1.0,
        )  # fmt: skip
        pixels[name] = np.asarray(engine.run(request).images[0].image, dtype=np.int16)
    assert pixels["fp8"].std() > 0
    assert np.abs(pixels["fp8"] - pixels["fp32"]).max() <= 1
