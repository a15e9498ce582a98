"""LoRA on the tiny SD3.5 and Flux models, in the formats Civitai files use: kohya keys in the original
(fused) layouts and diffusers/peft keys. Effects scale with the weight, weight 0 is no LoRA, fused q/k/v
deltas land row by row on diffusers' separate modules, and a LoRA of another family is refused whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from webui.core import families
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Components, Precision
from webui.core.models.flow_components import load_flow_components
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.networks.apply import NetworkCache, apply_networks
from webui.core.networks.registry import LoraFile, base_model
from webui.core.networks.tiny import flow_lora_targets, write_tiny_flow_lora, write_tiny_lora
from webui.core.sampling.model_inputs import ModelInputs
from webui.core.types import Txt2ImgRequest

ARCHES = ("flux-dev", "sd3.5")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Components]:
    root = tmp_path_factory.mktemp("flow-lora")
    out = {}
    for arch in ARCHES:
        layout = "comfy" if arch.startswith("flux") else "stability"
        path = save(single_file(build_tiny_flow(arch, seed=5), layout), root / f"{arch}.safetensors")
        out[arch] = load_flow_components(path, Precision())
    return out


def ref(path: Path) -> LoraFile:
    st = path.stat()
    return LoraFile(path, path.stem, path.stem, st.st_size, st.st_mtime_ns)


def params(c: Components) -> dict[str, torch.Tensor]:
    return {
        f"{n}.{k}": v.detach().clone()
        for n in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
        if getattr(c, n) is not None
        for k, v in getattr(c, n).state_dict().items()
    }


@torch.no_grad()
def outputs(c: Components) -> dict[str, torch.Tensor]:
    """The family's denoiser call on fixed inputs, and CLIP-L's hidden states of a fixed prompt."""
    g = torch.Generator().manual_seed(0)
    family = families.of(c)
    cfg = c.transformer.config
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": torch.randn(1, 6, cfg.joint_attention_dim, generator=g),
        "pooled_projections": torch.randn(1, cfg.pooled_projection_dim, generator=g),
    }
    if family.distilled_guidance:
        kwargs["guidance"] = 3.5
    sample = torch.randn(1, family.latent.channels, 8, 8, generator=g)
    denoised = family.denoiser(ModelInputs(c.transformer, sample, torch.tensor([500.0]), kwargs))
    ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72])
    return {"transformer": denoised, "text_encoder": c.text_encoder(ids).last_hidden_state}


def run_with(c: Components, nets: list[tuple[LoraFile, float, float]]) -> Any:
    with apply_networks(c, nets, NetworkCache()) as info:
        return info, outputs(c), params(c)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_flow_lora_scales_with_weight_zero_is_none_and_exit_restores(
    models: dict[str, Components], tmp_path: Path, arch: str, fmt: str
) -> None:
    c = models[arch]
    before, base = params(c), outputs(c)
    net = ref(write_tiny_flow_lora(tmp_path / f"{fmt}.safetensors", c, fmt, seed=2))
    info, zero, during = run_with(c, [(net, 0.0, 0.0)])
    assert all(torch.equal(during[k], before[k]) for k in before)
    assert all(torch.equal(zero[k], base[k]) for k in base)
    info, half, _ = run_with(c, [(net, 0.5, 0.5)])
    info, one, during = run_with(c, [(net, 1.0, 1.0)])
    assert info.messages == (), info.messages
    # every module of the file was reached: fused kohya modules count once per diffusers module
    targets = flow_lora_targets(c, fmt)
    assert info.applied[0].modules >= len(targets) > 10
    changed = {k.split(".")[0] for k in before if not torch.equal(during[k], before[k])}
    assert changed == {"transformer", "text_encoder"}
    for k in base:
        assert not torch.allclose(half[k], base[k], atol=1e-4), f"{k}: weight 0.5 did nothing"
        assert not torch.allclose(one[k], half[k], atol=1e-4), f"{k}: weight 1 same as 0.5"
    assert info.text_encoder_key == ((net.key, 1.0),)
    after = params(c)
    assert all(torch.equal(after[k], before[k]) for k in before), "weights not restored bit for bit"


def _lora(out_f: int, in_f: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_f, rank, generator=g), torch.randn(rank, in_f, generator=g)


def _merged(c: Components, net: LoraFile, weight: float, names: list[str]) -> dict[str, torch.Tensor]:
    modules = dict(c.transformer.named_modules())
    with apply_networks(c, [(net, 1.0, weight)], NetworkCache()) as info:
        assert info.messages == (), info.messages
        return {n: modules[n].weight.detach().clone() for n in names}


# original module name -> (diffusers modules stacked in its rows, halves swapped)
FUSED = {
    "flux-dev": {
        "double_blocks.0.img_attn.qkv": (["transformer_blocks.0.attn.to_q",
            "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"], False),
        "single_blocks.1.linear1": (["single_transformer_blocks.1.attn.to_q",
            "single_transformer_blocks.1.attn.to_k", "single_transformer_blocks.1.attn.to_v",
            "single_transformer_blocks.1.proj_mlp"], False),
        "double_blocks.0.txt_mod.lin": (["transformer_blocks.0.norm1_context.linear"], False),
        "final_layer.adaLN_modulation.1": (["norm_out.linear"], True),
    },
    "sd3.5": {
        "joint_blocks.0.x_block.attn.qkv": (["transformer_blocks.0.attn.to_q",
            "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"], False),
        "joint_blocks.1.context_block.attn.qkv": (["transformer_blocks.1.attn.add_q_proj",
            "transformer_blocks.1.attn.add_k_proj", "transformer_blocks.1.attn.add_v_proj"], False),
        "joint_blocks.2.context_block.adaLN_modulation.1": (
            ["transformer_blocks.2.norm1_context.linear"], True),  # the last block's: (shift, scale)
        "joint_blocks.0.x_block.attn2.qkv": (["transformer_blocks.0.attn2.to_q",
            "transformer_blocks.0.attn2.to_k", "transformer_blocks.0.attn2.to_v"], False),
    },
}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("style", ["kohya", "comfy"])
def test_fused_original_names_merge_as_w_plus_scale_up_down(
    models: dict[str, Components], tmp_path: Path, arch: str, style: str
) -> None:
    """Each diffusers module gets W + w * alpha/rank * up[its rows] @ down (halves swapped first where
    the original stores (shift, scale)): kohya's `lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight`
    and ComfyUI's `diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight` alike."""
    c = models[arch]
    modules = dict(c.transformer.named_modules())
    rank, alpha, weight = 4, 2.0, 0.75
    sd: dict[str, torch.Tensor] = {}
    factors = {}
    for i, (original, (names, _swap)) in enumerate(FUSED[arch].items()):
        out_f = sum(modules[n].weight.shape[0] for n in names)
        up, down = _lora(out_f, modules[names[0]].weight.shape[1], rank, seed=i)
        factors[original] = (up, down)
        if style == "kohya":
            stem = "lora_unet_" + original.replace(".", "_")
            sd |= {f"{stem}.lora_up.weight": up, f"{stem}.lora_down.weight": down}
        else:
            stem = f"diffusion_model.{original}"
            sd |= {f"{stem}.lora_B.weight": up, f"{stem}.lora_A.weight": down}
        sd[f"{stem}.alpha"] = torch.tensor(alpha)
    path = tmp_path / "fused.safetensors"
    save_file(sd, str(path))
    names = [n for ns, _ in FUSED[arch].values() for n in ns]
    original = {n: modules[n].weight.detach().clone() for n in names}
    merged = _merged(c, ref(path), weight, names)
    for stem, (ns, swap) in FUSED[arch].items():
        up, down = factors[stem]
        delta = weight * (alpha / rank) * (up @ down)
        if swap:
            delta = torch.cat(delta.chunk(2)[::-1])
        for n, rows in zip(ns, delta.split([original[n].shape[0] for n in ns]), strict=True):
            torch.testing.assert_close(merged[n], original[n] + rows, rtol=1e-5, atol=1e-5)
            assert not torch.equal(merged[n], original[n])


@pytest.mark.parametrize("arch", ARCHES)
def test_peft_file_merges_with_its_metadata_alpha(
    models: dict[str, Components], tmp_path: Path, arch: str
) -> None:
    """diffusers' saved LoRAs carry their alpha as `transformer.lora_alpha` in the header metadata."""
    c = models[arch]
    name = "transformer_blocks.0.attn.to_k"
    w = dict(c.transformer.named_modules())[name].weight
    rank, alpha = 4, 8.0
    up, down = _lora(w.shape[0], w.shape[1], rank, seed=9)
    path = tmp_path / "peft.safetensors"
    meta = {"lora_adapter_metadata": json.dumps({"transformer.r": rank, "transformer.lora_alpha": alpha})}
    stem = f"transformer.{name}"
    save_file({f"{stem}.lora_A.weight": down, f"{stem}.lora_B.weight": up}, path, meta)
    before = w.detach().clone()
    merged = _merged(c, ref(path), 0.5, [name])[name]
    torch.testing.assert_close(merged, before + 0.5 * (alpha / rank) * (up @ down), rtol=1e-5, atol=1e-5)


def test_a_lora_of_another_family_is_refused_whole_naming_the_file(
    models: dict[str, Components], tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    """Flux's and SDXL's kohya files both name CLIP-L `lora_te1_`: that part would fit, but the file is
    still skipped whole, with a message naming the file and what it looks like."""
    flux, sd35 = models["flux-dev"], models["sd3.5"]
    sdxl = load_model(tiny_files["sdxl"], Precision())
    flux_net = ref(write_tiny_flow_lora(tmp_path / "flux-style.safetensors", flux, "kohya"))
    sdxl_net = ref(write_tiny_lora(tmp_path / "xl-style.safetensors", sdxl, "kohya"))
    for model, net, looks in (
        (sdxl, flux_net, "Flux"),
        (flux, sdxl_net, "SD1/SD2/SDXL"),
        (sd35, flux_net, "Flux"),
    ):
        before = {k: v.clone() for m in model.modules().values() for k, v in m.state_dict().items()}
        with apply_networks(model, [(net, 1.0, 1.0)], NetworkCache()) as info:
            after = {k: v for m in model.modules().values() for k, v in m.state_dict().items()}
            assert all(torch.equal(after[k], before[k]) for k in before), "a foreign LoRA was half-applied"
        assert info.applied == () and len(info.messages) == 1
        message = info.messages[0]
        assert f"'{net.name}' skipped" in message and net.path.name in message, message
        assert f"does not fit this {model.label} model" in message and f"look like a {looks} LoRA" in message


# ---- through the engine: the same `<lora:name:w>` prompt as for SD1/SDXL -----------------------------


@pytest.fixture(scope="module")
def engine_config(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    root = tmp_path_factory.mktemp("flow-lora-engine")
    ckpts = root / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (ckpts / "tiny-sdxl.safetensors").symlink_to(tiny_files["sdxl"])
    for arch in ARCHES:
        layout = "comfy" if arch.startswith("flux") else "stability"
        path = save(single_file(build_tiny_flow(arch, seed=3), layout), ckpts / f"tiny-{arch}.safetensors")
        write_tiny_flow_lora(root / "models" / "Lora" / f"lora-{arch}.safetensors", load_flow_components(
            path, Precision()), "kohya", seed=4)  # fmt: skip
    return AppConfig.for_data_dir(root, hashing=False)


def _pixels(engine: Engine, arch: str, prompt: str) -> tuple[np.ndarray, tuple[str, ...]]:
    d = families.family(arch).defaults
    request = Txt2ImgRequest(
        prompt=prompt, checkpoint=f"tiny-{arch}", steps=2, width=64, height=64, seed=1, save_images=False,
        sampler_name=d.sampler, scheduler=d.schedule, cfg_scale=d.cfg_scale,
    )  # fmt: skip
    result = engine.run(request)
    return np.asarray(result.images[0].image), result.warnings


@pytest.mark.parametrize("arch", ARCHES)
def test_lora_prompt_tag_on_flow_models(engine_config: AppConfig, arch: str) -> None:
    manager = ModelManager(engine_config, Precision())
    manager.refresh()
    engine = Engine(engine_config, manager)
    plain, _ = _pixels(engine, arch, "a red apple")
    half, warnings = _pixels(engine, arch, f"a red apple<lora:lora-{arch}:0.5>")
    assert warnings == () and not np.array_equal(half, plain)
    one, _ = _pixels(engine, arch, f"a red apple<lora:lora-{arch}:1>")
    assert not np.array_equal(one, half)
    assert np.array_equal(_pixels(engine, arch, f"a red apple<lora:lora-{arch}:0>")[0], plain)
    assert np.array_equal(_pixels(engine, arch, "a red apple")[0], plain), "the LoRA leaked"
    te_only, _ = _pixels(engine, arch, f"<lora:lora-{arch}:1:0>a red apple")  # CLIP-L only: new encoding
    assert not np.array_equal(te_only, plain)
    assert np.array_equal(_pixels(engine, arch, "a red apple")[0], plain), "a LoRA encoding was reused"


def test_flux_lora_on_sdxl_is_a_job_warning_naming_the_file(engine_config: AppConfig) -> None:
    manager = ModelManager(engine_config, Precision())
    manager.refresh()
    engine = Engine(engine_config, manager)
    plain, _ = _pixels(engine, "sdxl", "a red apple")
    pixels, warnings = _pixels(engine, "sdxl", "a red apple<lora:lora-flux-dev:1>")
    assert np.array_equal(pixels, plain)
    text = " | ".join(warnings)
    assert "lora-flux-dev.safetensors does not fit this SDXL model" in text and "Flux LoRA" in text


def test_base_model_of_flow_lora_metadata() -> None:
    assert base_model({"ss_base_model_version": "flux1"}) == "flux"
    assert base_model({"modelspec.architecture": "flux-1-dev/lora"}) == "flux"
    assert base_model({"ss_base_model_version": "sd3"}) == "sd3"
    assert base_model({"modelspec.architecture": "stable-diffusion-v3.5-large/lora"}) == "sd3"
    assert base_model({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}) == "sdxl"
