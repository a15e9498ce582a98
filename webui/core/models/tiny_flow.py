"""Tiny SD3 / SD3.5 and Flux.1 models with random weights, and the files people keep them in.

Same idea as `tiny.py` for the UNet families: the real structure (MMDiT with CLIP-L, CLIP-G and T5 for
SD3; double/single-stream Flux transformer with CLIP-L and T5; a 16-channel VAE without quant convs)
at a width of 16-96, seeded, so fixtures build in a second and exercise the real loading code.

Variants: `sd3` (SD3 Medium: no q/k norm), `sd3.5` (SD3.5: RMS q/k norm, MMDiT-X dual attention in its
first block), `flux-dev` (guidance embedding) and `flux-schnell` (none).

Files, as found in the wild:
- `single_file(model, "stability")`: SD3's all-in-one (`model.diffusion_model.`, `text_encoders.clip_l`,
  `clip_g`, `t5xxl` and `first_stage_model.`);
- `single_file(model, "bfl")`: Flux's bare transformer as Black Forest Labs publish it;
- `single_file(model, "comfy")`: the ComfyUI/Forge all-in-one Flux file (`vae.` prefix);
- `split_files(...)`: transformer, `clip_l`, `t5xxl` (fp16 or fp8) and `ae` apart;
- `save_diffusers(...)`: a diffusers pipeline folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
)
from diffusers import __version__ as diffusers_version
from safetensors.torch import save_file
from torch import Tensor
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from webui.core import families
from webui.core.models import flux_layout, sd3_layout
from webui.core.models.ldm_layout import vae_to_ldm
from webui.core.models.t5_tokenizer import tokenizer_dir
from webui.core.models.text_layout import with_text_model_level
from webui.core.models.tiny import _clip_config, _randomize
from webui.core.models.tokenizer import EOS_TOKEN, OPENCLIP_PAD_TOKEN, save_clip_tokenizer

FLOW_ARCHES = ("sd3", "sd3.5", "flux-dev", "flux-schnell")
T5_WIDTH = 96  # SD3 pads its CLIP-L + CLIP-G features (32 + 48) to the T5 width


@dataclass(frozen=True, eq=False)
class TinyFlowModel:
    arch: str
    transformer: Any
    vae: Any
    clip_l: Any
    clip_g: Any | None  # SD3 only
    t5: Any
    scheduler_config: dict[str, Any]

    @property
    def is_flux(self) -> bool:
        return self.arch.startswith("flux")


def scheduler_config(arch: str) -> dict[str, Any]:
    """The family's official scheduler config (a copy)."""
    files = families.family(arch).files
    assert files is not None
    return dict(files.scheduler)


def _check(arch: str) -> None:
    if arch not in FLOW_ARCHES:
        raise ValueError(f"unknown tiny flow architecture {arch!r}; valid: {', '.join(FLOW_ARCHES)}")


def transformer_config(arch: str) -> dict[str, Any]:
    _check(arch)
    if arch.startswith("flux"):
        return dict(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=32,
            num_attention_heads=2,
            joint_attention_dim=T5_WIDTH,
            pooled_projection_dim=32,
            guidance_embeds=arch == "flux-dev",
            axes_dims_rope=(4, 14, 14),  # the real split (16, 56, 56) scaled to 32
        )
    # SD3 Medium has no q/k norm, so a loader takes its head width (64) by convention: one 32-wide head
    # here keeps that rule true for the fixture; SD3.5's norms carry their width (2 heads of 16).
    extra: dict[str, Any] = (
        {
            "qk_norm": "rms_norm",
            "dual_attention_layers": (0,),
            "num_attention_heads": 2,
            "attention_head_dim": 16,
        }
        if arch == "sd3.5"
        else {"num_attention_heads": 1, "attention_head_dim": 32}
    )
    return dict(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=3,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=32 + 40,
        pos_embed_max_size=32,
        **extra,
    )


def vae_config(arch: str) -> dict[str, Any]:
    _check(arch)
    latent = families.family(arch).latent
    scale, shift = latent.scaling_factor, latent.shift_factor
    return dict(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=32,
        scaling_factor=scale,
        shift_factor=shift,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=True,
    )


def t5_config() -> T5Config:
    return T5Config(
        vocab_size=32128,
        d_model=T5_WIDTH,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )


def build_tiny_flow(arch: str, seed: int = 0) -> TinyFlowModel:
    """A tiny `arch` model with weights drawn from `seed`, in eval mode, fp32, on the CPU."""
    _check(arch)
    gen = torch.Generator().manual_seed(seed)
    flux = arch.startswith("flux")
    cls: Any = FluxTransformer2DModel if flux else SD3Transformer2DModel
    vae_cls: Any = AutoencoderKL
    with torch.random.fork_rng(devices=[]):
        transformer = cls(**transformer_config(arch))
        vae = vae_cls(**vae_config(arch))
        clip_l: Any = (
            CLIPTextModel(_clip_config(32, "quick_gelu"))
            if flux
            else CLIPTextModelWithProjection(_clip_config(32, "quick_gelu", projection_dim=32))
        )
        clip_g = None if flux else CLIPTextModelWithProjection(_clip_config(48, "gelu", projection_dim=40))
        t5 = T5EncoderModel(t5_config())
    for m in (transformer, vae, clip_l, clip_g, t5):
        if m is not None:
            _randomize(m, gen)
            m.eval()
    if not flux:  # SD3 reads CLIP-L's pooled output unprojected: diffusers loads its projection as identity
        with torch.no_grad():
            clip_l.text_projection.weight.copy_(torch.eye(32))
    return TinyFlowModel(arch, transformer, vae, clip_l, clip_g, t5, scheduler_config(arch))


# ---- files ------------------------------------------------------------------------------------------


def _detached(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in sd.items()}


def clip_state_dict(module: Any) -> dict[str, Tensor]:
    """A CLIP text encoder as files hold it: `text_model.` before every key but `text_projection`."""
    flat = {
        k.removeprefix("text_model."): v
        for k, v in module.state_dict().items()
        if not k.endswith("position_ids")
    }
    return with_text_model_level(flat)


def t5_state_dict(model: TinyFlowModel) -> dict[str, Tensor]:
    """T5 as `t5xxl_*.safetensors` hold it: `shared.weight` once (the tied embedding not repeated)."""
    return {k: v for k, v in model.t5.state_dict().items() if k != "encoder.embed_tokens.weight"}


def vae_state_dict(model: TinyFlowModel) -> dict[str, Tensor]:
    """The VAE in the original (LDM) layout without a prefix, as `ae.safetensors` holds it."""
    return vae_to_ldm(model.vae.state_dict(), model.vae.config)


def transformer_state_dict(model: TinyFlowModel) -> dict[str, Tensor]:
    """The denoiser in its original layout (BFL's for Flux, Stability's for SD3), without a prefix."""
    sd = model.transformer.state_dict()
    return flux_layout.to_original(sd) if model.is_flux else sd3_layout.to_original(sd)


def single_file(model: TinyFlowModel, layout: str) -> dict[str, Tensor]:
    """The state dict of one file: "stability" (SD3 all-in-one), "bfl" or "comfy" (Flux)."""
    if layout == "bfl" and model.is_flux:
        return _detached(transformer_state_dict(model))
    if layout not in ("stability", "comfy") or (layout == "comfy") != model.is_flux:
        raise ValueError(f"{model.arch} files do not come in the {layout!r} layout")
    sd = {"model.diffusion_model." + k: v for k, v in transformer_state_dict(model).items()}
    vae_prefix = "vae." if layout == "comfy" else "first_stage_model."
    sd.update({vae_prefix + k: v for k, v in vae_state_dict(model).items()})
    encoders = {"clip_l": model.clip_l, "clip_g": model.clip_g}
    for name, module in encoders.items():
        if module is not None:
            sd.update(
                {f"text_encoders.{name}.transformer.{k}": v for k, v in clip_state_dict(module).items()}
            )
    sd.update({f"text_encoders.t5xxl.transformer.{k}": v for k, v in t5_state_dict(model).items()})
    return _detached(sd)


def save(sd: Mapping[str, Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(sd), str(path), metadata={"format": "pt"})
    return path


def split_files(
    model: TinyFlowModel, models_dir: Path, name: str, t5_dtype: torch.dtype = torch.float16
) -> dict[str, Path]:
    """The files of a split install under an A1111/Forge `models/` folder: the bare transformer in
    Stable-diffusion/; `clip_l`, (`clip_g`,) `t5xxl_fp16` or `t5xxl_fp8_e4m3fn` in text_encoder/; `ae`
    in VAE/."""
    enc = models_dir / "text_encoder"
    t5_name = "t5xxl_fp8_e4m3fn" if t5_dtype == torch.float8_e4m3fn else "t5xxl_fp16"
    files = {
        "transformer": save(
            _detached(transformer_state_dict(model)), models_dir / "Stable-diffusion" / f"{name}.safetensors"
        ),
        "clip_l": save(_detached(clip_state_dict(model.clip_l)), enc / "clip_l.safetensors"),
        "t5xxl": save(
            {k: v.to(t5_dtype) for k, v in _detached(t5_state_dict(model)).items()},
            enc / f"{t5_name}.safetensors",
        ),
        "vae": save(_detached(vae_state_dict(model)), models_dir / "VAE" / "ae.safetensors"),
    }
    if model.clip_g is not None:
        files["clip_g"] = save(_detached(clip_state_dict(model.clip_g)), enc / "clip_g.safetensors")
    return files


def _model_index(model: TinyFlowModel) -> dict[str, Any]:
    clip = ["transformers", "CLIPTokenizer"]
    t5 = ["transformers", "T5TokenizerFast"]
    index: dict[str, Any] = {
        "_diffusers_version": diffusers_version,
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "tokenizer": clip,
    }
    if model.is_flux:
        return index | {
            "_class_name": "FluxPipeline",
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer_2": t5,
            "image_encoder": [None, None],
            "feature_extractor": [None, None],
        }
    with_proj = ["transformers", "CLIPTextModelWithProjection"]
    return index | {
        "_class_name": "StableDiffusion3Pipeline",
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "text_encoder": with_proj,
        "text_encoder_2": with_proj,
        "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer_2": clip,
        "tokenizer_3": t5,
        "image_encoder": [None, None],
        "feature_extractor": [None, None],
    }


def save_diffusers(model: TinyFlowModel, folder: Path) -> Path:
    """A diffusers pipeline folder (StableDiffusion3Pipeline or FluxPipeline), tokenizers included."""
    folder.mkdir(parents=True, exist_ok=True)
    t5_slot = "2" if model.is_flux else "3"
    modules = {
        "transformer": model.transformer,
        "vae": model.vae,
        "text_encoder": model.clip_l,
        "text_encoder_2": model.clip_g,
        f"text_encoder_{t5_slot}": model.t5,
    }
    for sub, module in modules.items():
        if module is not None:
            module.save_pretrained(folder / sub)
    save_clip_tokenizer(folder / "tokenizer", EOS_TOKEN)
    if model.clip_g is not None:
        save_clip_tokenizer(folder / "tokenizer_2", OPENCLIP_PAD_TOKEN)
    shutil.copytree(
        tokenizer_dir(),
        folder / f"tokenizer_{t5_slot}",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("README.md"),
    )
    scheduler_cls: Any = FlowMatchEulerDiscreteScheduler
    scheduler_cls.from_config(model.scheduler_config).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps(_model_index(model), indent=2) + "\n", encoding="utf-8"
    )
    return folder
