"""Loading SD3 / Flux from every file layout people use, through `load_flow_model`, against the tiny
fixtures: weights come back as built, the parts come from the files they should, and a diffusers
pipeline made of the loaded parts draws the same image as one loaded from the diffusers folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from webui.core.models.checkpoint_file import CheckpointError
from webui.core.models.flow_loader import FlowParts, load_flow_model
from webui.core.models.tiny_flow import (
    TinyFlowModel,
    build_tiny_flow,
    save,
    save_diffusers,
    single_file,
    split_files,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TinyFlowModel, Path]]:
    root = tmp_path_factory.mktemp("flow-load")
    out = {}
    for arch in ("sd3", "sd3.5", "flux-dev", "flux-schnell"):
        m = build_tiny_flow(arch, seed=11)
        out[arch] = (m, root / arch)
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    a = {k: v for k, v in a.items() if k not in skip}
    b = {k: v for k, v in b.items() if k not in skip}
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def _check_parts(parts: FlowParts, model: TinyFlowModel, t5_dtype: torch.dtype = torch.float32) -> None:
    _same(parts.transformer.state_dict(), model.transformer.state_dict())
    _same(parts.vae.state_dict(), model.vae.state_dict())
    _same(parts.clip_l.state_dict(), model.clip_l.state_dict())
    _same(parts.t5.state_dict(), {k: v.to(t5_dtype).float() for k, v in model.t5.state_dict().items()})
    if model.clip_g is not None:
        _same(parts.clip_g.state_dict(), model.clip_g.state_dict())
    assert parts.variant == model.arch and parts.family == ("flux" if model.is_flux else "sd3")


@pytest.mark.parametrize("arch", ["sd3", "sd3.5"])
def test_stability_all_in_one(
    arch: str, models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    model, _ = models[arch]
    path = save(single_file(model, "stability"), tmp_path / "sd3.safetensors")
    parts = load_flow_model(path)
    _check_parts(parts, model)
    assert set(parts.sources.values()) == {path}
    assert parts.scheduler_config["shift"] == 3.0 and parts.vae.config.scaling_factor == 1.5305


@pytest.mark.parametrize("arch", ["flux-dev", "flux-schnell"])
def test_comfy_all_in_one(arch: str, models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path) -> None:
    model, _ = models[arch]
    path = save(single_file(model, "comfy"), tmp_path / "flux-aio.safetensors")
    parts = load_flow_model(path)
    _check_parts(parts, model)
    assert parts.t5_tokenizer.model_max_length == (512 if arch == "flux-dev" else 256)
    assert parts.scheduler_config["use_dynamic_shifting"] is (arch == "flux-dev")


def test_split_files_are_found_in_their_folders(
    models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    model, _ = models["flux-dev"]
    files = split_files(model, tmp_path / "models", "flux1-dev")  # T5 in fp16, as t5xxl_fp16 is
    parts = load_flow_model(
        files["transformer"],
        text_encoder_dirs=[tmp_path / "models" / "text_encoder"],
        vae_dirs=[tmp_path / "models" / "VAE"],
    )
    _check_parts(parts, model, t5_dtype=torch.float16)
    assert parts.sources == {
        "transformer": files["transformer"],
        "vae": files["vae"],
        "clip_l": files["clip_l"],
        "t5": files["t5xxl"],
    }


def test_fp8_t5_is_upcast_and_picked_files_win(
    models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    model, _ = models["flux-schnell"]
    fp8 = split_files(model, tmp_path / "fp8", "flux1-schnell", t5_dtype=torch.float8_e4m3fn)
    parts = load_flow_model(fp8["transformer"], modules=[fp8["t5xxl"], fp8["clip_l"], fp8["vae"]])
    assert parts.sources["t5"] == fp8["t5xxl"]
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    loaded = parts.t5.state_dict()[q]
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, model.t5.state_dict()[q].to(torch.float8_e4m3fn).float())


def _image(pipe: Any, arch: str) -> torch.Tensor:
    kw: dict[str, Any] = {"guidance_scale": 3.5} if arch == "flux-dev" else {}
    return pipe(
        "a red fox",
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="pt",
        max_sequence_length=64,
        generator=torch.Generator().manual_seed(3),
        **kw,
    ).images


@pytest.mark.parametrize("arch", ["sd3.5", "flux-dev"])
def test_a_pipeline_of_loaded_parts_draws_what_the_folder_draws(
    arch: str, models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    model, folder = models[arch]
    save_diffusers(model, folder)
    layout = "comfy" if model.is_flux else "stability"
    parts = load_flow_model(save(single_file(model, layout), tmp_path / "m.safetensors"))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config)
    if model.is_flux:
        ours: Any = FluxPipeline(
            scheduler,
            parts.vae,
            parts.clip_l,
            parts.tokenizer,
            parts.t5,
            parts.t5_tokenizer,
            parts.transformer,
        )
        ref: Any = FluxPipeline.from_pretrained(str(folder), local_files_only=True)
    else:
        ours = StableDiffusion3Pipeline(
            parts.transformer,
            scheduler,
            parts.vae,
            parts.clip_l,
            parts.tokenizer,
            parts.clip_g,
            parts.tokenizer_2,
            parts.t5,
            parts.t5_tokenizer,
        )
        ref = StableDiffusion3Pipeline.from_pretrained(str(folder), local_files_only=True)
    a, b = _image(ours, arch), _image(ref, arch)
    assert a.std() > 0.01
    # same weights; float rounding of differently laid-out tensors only (far below 1/255)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_missing_text_encoders_name_the_files_and_folder(
    models: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    model, _ = models["flux-dev"]
    files = split_files(model, tmp_path / "models", "flux1-dev")
    files["clip_l"].unlink()
    enc = tmp_path / "models" / "text_encoder"
    with pytest.raises(CheckpointError, match=r"CLIP-L .*add clip_l\.safetensors to .*text_encoder"):
        load_flow_model(files["transformer"], text_encoder_dirs=[enc], vae_dirs=[tmp_path / "models" / "VAE"])
    with pytest.raises(CheckpointError, match=r"VAE weights: add ae\.safetensors"):
        load_flow_model(files["transformer"], text_encoder_dirs=[enc])


def test_wrong_parts_are_refused_by_name(
    models: dict[str, tuple[TinyFlowModel, Path]], tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import T5Config, T5EncoderModel

    model, _ = models["flux-schnell"]
    files = split_files(model, tmp_path / "models", "flux1-schnell")
    narrow = T5EncoderModel(
        T5Config(
            vocab_size=32128,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=1,
            num_heads=2,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
        )
    )
    bad_t5 = save(
        {k: v.clone() for k, v in narrow.state_dict().items() if k != "encoder.embed_tokens.weight"},
        tmp_path / "t5-small.safetensors",
    )
    with pytest.raises(CheckpointError, match=r"t5-small\.safetensors.*T5 width 64 .*takes 96"):
        load_flow_model(files["transformer"], modules=[bad_t5, files["clip_l"], files["vae"]])
    sd1_vae = save(
        {
            k.removeprefix("first_stage_model."): v
            for k, v in __import__("webui.core.models.checkpoint_file", fromlist=["x"])
            .load_state_dict(tiny_files["sd1"])
            .items()
            if k.startswith("first_stage_model.")
        },
        tmp_path / "sd1-vae.safetensors",
    )
    with pytest.raises(CheckpointError, match=r"4-channel VAE cannot decode"):
        load_flow_model(files["transformer"], modules=[files["t5xxl"], files["clip_l"], sd1_vae])
    with pytest.raises(CheckpointError, match="not an SD3 or Flux model"):
        load_flow_model(files["clip_l"])
