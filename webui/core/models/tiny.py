"""Tiny models of the real architectures with random weights: test fixtures and the offline demo model.

Each family keeps the real model's structure and conventions (block types, which levels attend, head
rules, activations, OpenCLIP's penultimate layer for SD2, two text encoders of different widths for
SDXL) at a width of 32-96 channels, so a model builds in well under a second and a 64 px image takes
about a second on a CPU. The loader infers configs from tensor shapes plus these family rules, so
anything it gets right here it gets right for the real models too.

Weights are drawn from one seeded `torch.Generator`: the same seed gives bit-equal models, and the
caller's global RNG is left as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers import __version__ as diffusers_version
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from webui.core import families
from webui.core.families import sd1
from webui.core.models.ldm_layout import unet_to_ldm, vae_to_ldm
from webui.core.models.text_layout import clip_to_ldm, openclip_to_ldm
from webui.core.models.tokenizer import save_clip_tokenizer

ARCHES = ("sd1", "sd1-inpaint", "sd2-v", "sdxl")  # the shared test fixtures (conftest's tiny_files)
MORE_ARCHES = ("sd1-edit",)  # built where a test asks for them

UNET_PREFIX = sd1.UNET_KEYS
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True, eq=False)
class TinyModel:
    """A tiny model's components (diffusers/transformers modules in eval mode, fp32)."""

    arch: str
    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any | None
    scheduler_config: dict[str, Any]
    # SD2 only: the OpenCLIP block after the penultimate one, which the file has and the model does not
    extra_text_block: dict[str, Tensor] | None = field(default=None, repr=False)


def _family(arch: str) -> families.Family:
    """The family a tiny `arch` model follows (its latent format, text encoders, conventions)."""
    if arch not in ARCHES + MORE_ARCHES:
        names = ", ".join(ARCHES + MORE_ARCHES)
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {names}")
    return families.family(arch)


_TEXT_WIDTHS = (32, 48)  # SDXL's two encoders MUST differ in width (see text_config_2)


# ---- configs ----------------------------------------------------------------------------------------


def unet_config(arch: str) -> dict[str, Any]:
    fam = _family(arch)
    latent = fam.latent
    cfg: dict[str, Any] = {
        "sample_size": 8,
        "in_channels": fam.in_channels,
        "out_channels": latent.channels,
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": 8,  # SD1: diffusers' field holds the number of heads
        "use_linear_projection": False,
    }
    if fam.unet_head_dim is None:  # SD2, SDXL
        cfg.update(use_linear_projection=True, attention_head_dim=[1, 1])  # heads = channels // 64
    if fam.time_id_count:  # SDXL
        cfg.update(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            use_linear_projection=True,
            attention_head_dim=[1, 1],
            cross_attention_dim=sum(_TEXT_WIDTHS),  # both encoders' hidden states, concatenated
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=fam.time_id_count * 8 + 40,  # size/crop ids + pooled
        )
    return cfg


def vae_config(arch: str) -> dict[str, Any]:
    latent = _family(arch).latent
    return {
        "sample_size": 64,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent.channels,
        "block_out_channels": (32, 32, 64, 64),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "scaling_factor": latent.scaling_factor,
    }


def _clip_config(width: int, act: str, **extra: Any) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=5,
        num_attention_heads=1,
        hidden_act=act,
        **extra,
    )


def text_config(arch: str) -> CLIPTextConfig:
    """The first (SD1/SD2: only) text encoder: CLIP-L style, or OpenCLIP style for SD2."""
    first = _family(arch).text.encoders[0]
    return _clip_config(_TEXT_WIDTHS[0], "gelu" if first.layout.startswith("openclip") else "quick_gelu")


def text_config_2(arch: str) -> CLIPTextConfig | None:
    """SDXL's OpenCLIP-bigG-style second encoder: wider than the first, projection neither width."""
    second = len(_family(arch).text.encoders) > 1
    return _clip_config(_TEXT_WIDTHS[1], "gelu", projection_dim=40) if second else None


def scheduler_config(arch: str) -> dict[str, Any]:
    """SD's training schedule, as a config for `SchedulerClass.from_config` (which ignores keys a class
    does not take; passing them as keyword arguments fails: PNDM rejects `clip_sample`). `clip_sample`
    must be False: DDIM defaults to True, which is wrong for Stable Diffusion."""
    fam = _family(arch)
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": fam.prediction_type,
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
    }


# ---- building ---------------------------------------------------------------------------------------


@torch.no_grad()
def _randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Every parameter drawn from `gen`: matrices ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2),
    biases ~ N(0, 0.02^2). No parameter is constant, so two swapped keys cannot go unnoticed."""
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p.ndim >= 2:
            p.copy_(noise * p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.02 * noise)


def build_tiny(arch: str, seed: int = 0) -> TinyModel:
    """A tiny `arch` model with weights drawn from `seed`, in eval mode, fp32, on the CPU."""
    fam = _family(arch)
    gen = torch.Generator().manual_seed(seed)
    te_cfg = text_config(arch)
    te2_cfg = text_config_2(arch)
    unet_cls: Any = UNet2DConditionModel  # diffusers' constructors are untyped
    vae_cls: Any = AutoencoderKL
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
        unet = unet_cls(**unet_config(arch))
        vae = vae_cls(**vae_config(arch))
        te = CLIPTextModel(te_cfg)
        te2 = CLIPTextModelWithProjection(te2_cfg) if te2_cfg is not None else None
        extra = CLIPEncoderLayer(te_cfg) if _penultimate(fam) else None
    modules: list[Any] = [m for m in (unet, vae, te, te2, extra) if m is not None]
    for m in modules:
        _randomize(m, gen)
        m.eval()
    return TinyModel(
        arch=arch,
        unet=unet,
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        scheduler_config=scheduler_config(arch),
        extra_text_block=None if extra is None else {k: v.clone() for k, v in extra.state_dict().items()},
    )


# ---- single file ------------------------------------------------------------------------------------


def _penultimate(fam: families.Family) -> bool:
    """SD2: the file has one OpenCLIP block more than the model conditions on."""
    return any(e.layout == "openclip-penultimate" for e in fam.text.encoders)


def to_ldm_state_dict(model: TinyModel) -> dict[str, Tensor]:
    """The whole model in single-file (LDM) layout, with its family's prefixes."""
    sd = {UNET_PREFIX + k: v for k, v in unet_to_ldm(model.unet.state_dict(), model.unet.config).items()}
    sd.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(model.vae.state_dict(), model.vae.config).items()})
    for e in _family(model.arch).text.encoders:
        module = getattr(model, e.component)
        if module is None:
            raise ValueError(f"a {model.arch} model needs {e.component}")
        if e.layout == "clip":
            sd.update(clip_to_ldm(module.state_dict(), e.key_prefix))
        else:
            extra = model.extra_text_block if e.layout == "openclip-penultimate" else None
            sd.update(openclip_to_ldm(module.state_dict(), e.key_prefix, extra_final_block=extra))
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in sd.items()}


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def v_prediction_yaml() -> dict[str, Any]:
    """A stub of the original LDM config that marks a v-prediction model (A1111's `name.yaml`)."""
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "parameterization": "v",
                "linear_start": 0.00085,
                "linear_end": 0.012,
                "timesteps": 1000,
                "scale_factor": 0.18215,
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                    "params": {"freeze": True, "layer": "penultimate"},
                },
            },
        }
    }


def save_single_file(model: TinyModel, path: Path) -> Path:
    """Write `.safetensors`, or a `.ckpt` pickle of {"state_dict": ...}; sd2-v adds `name.yaml`."""
    sd = to_ldm_state_dict(model)
    if path.suffix == ".safetensors":
        _atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata={"format": "pt"}))
    elif path.suffix == ".ckpt":
        _atomic_write(path, lambda tmp: torch.save({"state_dict": sd}, tmp))
    else:
        raise ValueError(f"{path.name}: a single file ends in .safetensors or .ckpt")
    if _family(model.arch).prediction_type == "v_prediction":
        text = yaml.safe_dump(v_prediction_yaml(), sort_keys=False)
        _atomic_write(path.with_suffix(".yaml"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def write_demo_checkpoint(models_dir: Path, arch: str = "sd1") -> Path:
    """`models_dir/Stable-diffusion/sfumato-demo-tiny-random-<arch>.safetensors` (seed 0)."""
    from webui.core.models.demo import DEMO_PREFIX

    path = models_dir / "Stable-diffusion" / f"{DEMO_PREFIX}{arch}.safetensors"
    return save_single_file(build_tiny(arch, seed=0), path)


# ---- diffusers folder -------------------------------------------------------------------------------


def _two_encoders(model: TinyModel) -> bool:
    return len(_family(model.arch).text.encoders) > 1


def _model_index(model: TinyModel) -> dict[str, Any]:
    index: dict[str, Any] = {
        "_class_name": _family(model.arch).pipeline_class,
        "_diffusers_version": diffusers_version,
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
    }
    if _two_encoders(model):  # SDXL
        index.update(
            text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2=["transformers", "CLIPTokenizer"],
            scheduler=["diffusers", "EulerDiscreteScheduler"],
            force_zeros_for_empty_prompt=True,
        )
    else:
        index.update(safety_checker=[None, None], requires_safety_checker=False)
    return index


def save_diffusers(model: TinyModel, folder: Path) -> Path:
    """A diffusers pipeline folder: model_index.json and one subfolder per component, tokenizers included
    (CLIP ViT-L pads with `<|endoftext|>`, OpenCLIP with `!`)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = _model_index(model)
    components: Mapping[str, Any] = {
        "unet": model.unet,
        "vae": model.vae,
        "text_encoder": model.text_encoder,
        "text_encoder_2": model.text_encoder_2,
    }
    for name, module in components.items():
        if module is not None:
            module.save_pretrained(folder / name)
    fam = _family(model.arch)
    for e in fam.text.encoders:
        save_clip_tokenizer(folder / e.tokenizer, e.pad_token)
    scheduler_cls: Any = EulerDiscreteScheduler if _two_encoders(model) else DDIMScheduler
    scheduler_cls.from_config(model.scheduler_config).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folder
