"""Tiny real-architecture models: deterministic, runnable, and written in the layouts the ecosystem reads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from safetensors.torch import load_file

from webui.core.models.tiny import (
    ARCHES,
    TinyModel,
    build_tiny,
    save_diffusers,
    save_single_file,
    to_ldm_state_dict,
    write_demo_checkpoint,
)

PIPELINES: dict[str, Any] = {
    "sd1": StableDiffusionPipeline,
    "sd1-inpaint": StableDiffusionInpaintPipeline,
    "sd2-v": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
}


def _modules(model: TinyModel) -> dict[str, Any]:
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return {n: getattr(model, n) for n in names if getattr(model, n) is not None}


def _assert_same_weights(a: TinyModel | Any, b: Any, names: list[str]) -> None:
    for name in names:
        want = getattr(a, name).state_dict()
        got = getattr(b, name).state_dict()
        assert sorted(got) == sorted(want), name
        for key, tensor in want.items():
            assert not got[key].is_meta, f"{name}.{key} left on the meta device"
            assert torch.equal(got[key], tensor), f"{name}.{key} differs"


# ---- building ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_build_is_fast_deterministic_and_leaves_global_rng_alone(arch: str) -> None:
    rng = torch.get_rng_state()
    start = time.perf_counter()
    a = build_tiny(arch, seed=0)
    assert time.perf_counter() - start < 5
    assert torch.equal(torch.get_rng_state(), rng)
    b = build_tiny(arch, seed=0)
    c = build_tiny(arch, seed=1)
    for name, module in _modules(a).items():
        assert not module.training, f"{name} is in train mode"
        assert all(p.dtype == torch.float32 for p in module.parameters())
        other, different = getattr(b, name).state_dict(), getattr(c, name).state_dict()
        for key, tensor in module.state_dict().items():
            assert torch.equal(tensor, other[key]), f"{name}.{key}: same seed, different weights"
            if tensor.is_floating_point():
                assert not torch.equal(tensor, different[key]), f"{name}.{key}: seed has no effect"
    ldm_a, ldm_b = to_ldm_state_dict(a), to_ldm_state_dict(b)
    assert all(torch.equal(ldm_a[k], ldm_b[k]) for k in ldm_a)


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="sd1"):
        build_tiny("sd3")


@pytest.mark.parametrize("arch", ARCHES)
def test_forward_passes_have_real_shapes(arch: str) -> None:
    m = build_tiny(arch)
    batch = 2
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73] * batch)
    with torch.no_grad():
        hidden = m.text_encoder(ids).last_hidden_state
        extra: dict[str, Any] = {}
        if m.text_encoder_2 is not None:
            out2 = m.text_encoder_2(ids, output_hidden_states=True)
            assert out2.text_embeds.shape == (batch, 40)
            hidden = torch.cat([hidden, out2.hidden_states[-2]], dim=-1)
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch)
            extra["added_cond_kwargs"] = {"text_embeds": out2.text_embeds, "time_ids": time_ids}
        assert hidden.shape == (batch, 77, m.unet.config.cross_attention_dim)
        latents = torch.randn(
            batch, m.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0)
        )
        noise_pred = m.unet(latents, 500, encoder_hidden_states=hidden, **extra).sample
        image = m.vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))).sample
        encoded = m.vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mean
    assert noise_pred.shape == (batch, 4, 8, 8) and torch.isfinite(noise_pred).all()
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    assert encoded.shape == (1, 4, 8, 8)


def test_family_conventions() -> None:
    sd1, sd2, xl = build_tiny("sd1"), build_tiny("sd2-v"), build_tiny("sdxl")
    assert sd1.text_encoder.config.hidden_act == "quick_gelu" and sd1.text_encoder_2 is None
    assert sd1.unet.config.use_linear_projection is False and sd1.unet.config.attention_head_dim == 8
    assert build_tiny("sd1-inpaint").unet.config.in_channels == 9
    assert sd2.text_encoder.config.hidden_act == "gelu" and sd2.unet.config.use_linear_projection
    assert sd2.scheduler_config["prediction_type"] == "v_prediction"
    assert sd1.scheduler_config["prediction_type"] == "epsilon"
    assert sd2.extra_text_block is not None and "self_attn.q_proj.weight" in sd2.extra_text_block
    te2 = xl.text_encoder_2
    assert te2 is not None
    widths = (xl.text_encoder.config.hidden_size, te2.config.hidden_size)
    assert widths[0] != widths[1], "equal encoder widths make diffusers misload SDXL"
    assert te2.config.projection_dim not in widths
    assert xl.unet.config.cross_attention_dim == sum(widths)
    assert xl.vae.config.scaling_factor == 0.13025 and sd1.vae.config.scaling_factor == 0.18215


# ---- single files -----------------------------------------------------------------------------------


def test_single_file_keys_follow_each_architecture() -> None:
    sd1 = to_ldm_state_dict(build_tiny("sd1"))
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in sd1
    assert sd1["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 4
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in sd1
    inpaint = to_ldm_state_dict(build_tiny("sd1-inpaint"))
    assert inpaint["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    sd2 = to_ldm_state_dict(build_tiny("sd2-v"))
    assert "cond_stage_model.model.token_embedding.weight" in sd2
    assert "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight" in sd2  # 5 layers + 1
    assert not any(".resblocks.6." in k for k in sd2)
    assert not any(k.startswith("cond_stage_model.transformer.") for k in sd2)
    xl = to_ldm_state_dict(build_tiny("sdxl"))
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl
    assert xl["conditioner.embedders.1.model.positional_embedding"].shape == (77, 48)
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (48, 40)
    assert xl["model.diffusion_model.label_emb.0.0.weight"].shape[1] == 88
    for state in (sd1, inpaint, sd2, xl):
        assert all(v.is_contiguous() and v.dtype == torch.float32 for v in state.values())


@pytest.mark.parametrize("arch", ARCHES)
def test_single_file_loads_bit_equal_with_diffusers(arch: str, tmp_path: Path) -> None:
    """diffusers' own single-file loader (with our folder as its offline config) gets every weight."""
    model = build_tiny(arch, seed=3)
    folder = save_diffusers(model, tmp_path / "config")
    path = save_single_file(model, tmp_path / f"{arch}.safetensors")
    pipe = PIPELINES[arch].from_single_file(str(path), config=str(folder), local_files_only=True)
    _assert_same_weights(model, pipe, list(_modules(model)))


def test_safetensors_and_ckpt_hold_the_same_tensors(tmp_path: Path) -> None:
    model = build_tiny("sd1")
    expected = to_ldm_state_dict(model)
    st = load_file(str(save_single_file(model, tmp_path / "a.safetensors")))
    ckpt = torch.load(save_single_file(model, tmp_path / "a.ckpt"), weights_only=True)
    assert set(ckpt) == {"state_dict"}
    for state in (st, ckpt["state_dict"]):
        assert sorted(state) == sorted(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not (tmp_path / "a.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "a.safetensors"]  # no temp files left
    with pytest.raises(ValueError, match="safetensors"):
        save_single_file(model, tmp_path / "a.bin")


def test_sd2_v_writes_the_v_prediction_sidecar(tmp_path: Path) -> None:
    path = save_single_file(build_tiny("sd2-v"), tmp_path / "sub" / "model.safetensors")
    config = yaml.safe_load((tmp_path / "sub" / "model.yaml").read_text(encoding="utf-8"))
    assert config["model"]["params"]["parameterization"] == "v"
    assert path.is_file()


# ---- diffusers folders and the demo checkpoint ------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_diffusers_folder_is_a_complete_pipeline(arch: str, tmp_path: Path) -> None:
    model = build_tiny(arch, seed=4)
    folder = save_diffusers(model, tmp_path / arch)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == PIPELINES[arch].__name__
    assert (folder / "text_encoder_2").is_dir() == (folder / "tokenizer_2").is_dir() == (arch == "sdxl")
    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)  # type: ignore[no-untyped-call]
    assert type(pipe) is PIPELINES[arch]
    _assert_same_weights(model, pipe, list(_modules(model)))
    assert pipe.scheduler.config.prediction_type == model.scheduler_config["prediction_type"]
    assert pipe.scheduler.config.get("clip_sample", False) is False  # DDIM defaults to True: wrong for SD
    openclip_pad = "tokenizer_2" if arch == "sdxl" else "tokenizer" if arch == "sd2-v" else None
    if openclip_pad:
        assert getattr(pipe, openclip_pad).pad_token_id == 0
    assert pipe.tokenizer("a photo").input_ids == [49406, 320, 1125, 49407]
    extra: dict[str, Any] = {}
    if arch == "sd1-inpaint":
        extra = {"image": torch.zeros(1, 3, 64, 64), "mask_image": torch.ones(1, 1, 64, 64)}
    image = pipe(
        "a photo", num_inference_steps=2, height=64, width=64, output_type="pt",
        generator=torch.Generator().manual_seed(0), **extra,
    ).images  # fmt: skip
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_demo_checkpoint(tmp_path: Path) -> None:
    path = write_demo_checkpoint(tmp_path / "models")
    assert path == tmp_path / "models" / "Stable-diffusion" / "sfumato-demo-tiny-random-sd1.safetensors"
    first = path.read_bytes()
    assert write_demo_checkpoint(tmp_path / "models") == path
    assert path.read_bytes() == first  # same seed, same file
    xl = write_demo_checkpoint(tmp_path / "models", arch="sdxl")
    assert xl.name == "sfumato-demo-tiny-random-sdxl.safetensors"
    assert "conditioner.embedders.1.model.positional_embedding" in load_file(str(xl))
