"""Tiny SD3 / SD3.5 / Flux fixtures and their file layouts, checked against diffusers' own readers:
the pipelines run on the diffusers folders, diffusers' single-file loaders read our SD3 and VAE files
back bit-equal, and our Flux / SD3 layout mappings equal diffusers' converters (Flux at the real width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from webui.core.models import flux_layout, sd3_layout
from webui.core.models.tiny_flow import (
    FLOW_ARCHES,
    TinyFlowModel,
    build_tiny_flow,
    clip_state_dict,
    save,
    save_diffusers,
    single_file,
    split_files,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TinyFlowModel, Path]]:
    root = tmp_path_factory.mktemp("flow")
    return {
        arch: (m := build_tiny_flow(arch, seed=7), save_diffusers(m, root / arch)) for arch in FLOW_ARCHES
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_same_seed_same_weights_other_seed_others() -> None:
    a, b, c = build_tiny_flow("flux-dev", 1), build_tiny_flow("flux-dev", 1), build_tiny_flow("flux-dev", 2)
    _same(a.transformer.state_dict(), b.transformer.state_dict())
    assert not torch.equal(a.t5.shared.weight, c.t5.shared.weight)


@pytest.mark.parametrize("arch", FLOW_ARCHES)
def test_diffusers_pipeline_runs_on_the_folder(
    arch: str, built: dict[str, tuple[TinyFlowModel, Path]]
) -> None:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    _, folder = built[arch]
    cls: Any = FluxPipeline if arch.startswith("flux") else StableDiffusion3Pipeline
    pipe = cls.from_pretrained(str(folder), local_files_only=True)
    kw: dict[str, Any] = {"max_sequence_length": 64}
    if arch == "flux-dev":
        kw["guidance_scale"] = 3.5
    out = pipe("a red fox", num_inference_steps=2, height=64, width=64, output_type="pt",
               generator=torch.Generator().manual_seed(0), **kw).images  # fmt: skip
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    assert out.std() > 0


@pytest.mark.parametrize("arch", ["sd3", "sd3.5"])
def test_stability_single_file_reads_back_through_diffusers(
    arch: str, built: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    from diffusers import StableDiffusion3Pipeline

    model, folder = built[arch]
    path = save(single_file(model, "stability"), tmp_path / f"{arch}.safetensors")
    pipe = StableDiffusion3Pipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    _same(pipe.transformer.state_dict(), model.transformer.state_dict())
    _same(pipe.vae.state_dict(), model.vae.state_dict())
    _same(pipe.text_encoder.state_dict(), model.clip_l.state_dict())
    assert model.clip_g is not None
    _same(pipe.text_encoder_2.state_dict(), model.clip_g.state_dict())
    t5 = {k: v for k, v in pipe.text_encoder_3.state_dict().items() if k != "encoder.embed_tokens.weight"}
    _same(t5, {k: v for k, v in model.t5.state_dict().items() if k != "encoder.embed_tokens.weight"})


@pytest.mark.parametrize("arch", ["flux-dev", "flux-schnell"])
@pytest.mark.parametrize("layout", ["bfl", "comfy"])
def test_flux_files_read_back(
    arch: str, layout: str, built: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    from diffusers import AutoencoderKL

    model, folder = built[arch]
    path = save(single_file(model, layout), tmp_path / f"{arch}.safetensors")
    sd = load_file(str(path))
    prefix = "model.diffusion_model." if layout == "comfy" else ""
    _same(flux_layout.from_original(sd, prefix), model.transformer.state_dict())
    config = flux_layout.transformer_config({k: tuple(v.shape) for k, v in sd.items()}, prefix)
    assert config["guidance_embeds"] == (arch == "flux-dev") and config["joint_attention_dim"] == 96
    if layout == "comfy":  # diffusers reads the `vae.` prefix of these files
        vae = AutoencoderKL.from_single_file(
            str(path), config=str(folder), subfolder="vae", local_files_only=True
        )
        _same(vae.state_dict(), model.vae.state_dict())
        assert any(k.startswith("text_encoders.t5xxl.transformer.encoder.") for k in sd)
    else:
        assert all(not k.startswith(("vae.", "text_encoders.", "model.")) for k in sd)


def test_split_files_load_and_fp8_t5_keeps_its_values(
    built: dict[str, tuple[TinyFlowModel, Path]], tmp_path: Path
) -> None:
    from diffusers import AutoencoderKL

    model, folder = built["flux-dev"]
    files = split_files(model, tmp_path / "models", "tiny-flux", t5_dtype=torch.float8_e4m3fn)
    assert files["t5xxl"].name == "t5xxl_fp8_e4m3fn.safetensors"
    t5 = load_file(str(files["t5xxl"]))
    assert all(v.dtype == torch.float8_e4m3fn for v in t5.values())
    ref = model.t5.state_dict()["encoder.block.0.layer.0.SelfAttention.q.weight"]
    torch.testing.assert_close(
        t5["encoder.block.0.layer.0.SelfAttention.q.weight"].float(), ref, rtol=0.07, atol=1e-3
    )
    clip = load_file(str(files["clip_l"]))  # Hugging Face names under `text_model.`, as ComfyUI/Forge keep it
    assert all(k.startswith("text_model.") for k in clip)
    _same(clip, clip_state_dict(model.clip_l))
    vae = AutoencoderKL.from_single_file(
        str(files["vae"]), config=str(folder), subfolder="vae", local_files_only=True
    )
    _same(vae.state_dict(), model.vae.state_dict())
    _same(flux_layout.from_original(load_file(str(files["transformer"]))), model.transformer.state_dict())


@pytest.mark.parametrize("arch", ["sd3", "sd3.5"])
def test_sd3_layout_equals_diffusers_converter(
    arch: str, built: dict[str, tuple[TinyFlowModel, Path]]
) -> None:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    model, _ = built[arch]
    original = {
        "model.diffusion_model." + k: v
        for k, v in sd3_layout.to_original(model.transformer.state_dict()).items()
    }
    _same(convert_sd3_transformer_checkpoint_to_diffusers(dict(original)), model.transformer.state_dict())
    _same(sd3_layout.from_original(original, "model.diffusion_model."), model.transformer.state_dict())


def test_flux_layout_equals_diffusers_converter_at_the_real_width() -> None:
    """diffusers' converter only reads full-width (3072) Flux files: compare at that width, one block
    of each kind, with byte tensors so the check costs ~0.5 GB."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    with init_empty_weights():
        meta = FluxTransformer2DModel(
            num_layers=1,
            num_single_layers=1,
            joint_attention_dim=64,
            pooled_projection_dim=32,
            guidance_embeds=True,
        )
    gen = torch.Generator().manual_seed(0)
    sd = {
        k: torch.randint(0, 256, v.shape, dtype=torch.uint8, generator=gen)
        for k, v in meta.state_dict().items()
    }
    original = flux_layout.to_original(sd)
    assert original["img_in.weight"].shape == (3072, 64)
    _same(convert_flux_transformer_checkpoint_to_diffusers(dict(original)), sd)
    _same(flux_layout.from_original(original), sd)


def test_unknown_weights_and_missing_blocks_are_named() -> None:
    model = build_tiny_flow("flux-schnell")
    sd = dict(model.transformer.state_dict())
    sd["surprise.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="surprise.weight"):
        flux_layout.to_original(sd)
    original = flux_layout.to_original(model.transformer.state_dict())
    del original["single_blocks.1.linear2.weight"]
    with pytest.raises(ValueError, match="single_blocks.1.linear2.weight"):
        flux_layout.from_original(original)
    with pytest.raises(ValueError, match="not a Flux transformer"):
        flux_layout.from_original({"x": torch.zeros(1)})
