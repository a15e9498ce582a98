"""SD3 / SD3.5 and Flux.1 models as `Components`: `flow_loader` reads the files (an all-in-one file,
or a transformer-only file plus text encoders and a VAE from their folders), this names the parts the
way the families and the loop read them (the transformer, CLIP-L as `text_encoder`, CLIP-G as
`text_encoder_2`, T5 as `text_encoder_3`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webui.core import families
from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    CheckpointError,
    read_safetensors_header,
    sniff_format,
)
from webui.core.models.components import Components, Precision
from webui.core.models.detect import UNET, Detected, Shapes
from webui.core.models.flow_loader import load_flow_model


def detect_flow(shapes: Shapes) -> Detected | None:
    """An SD3 / SD3.5 or Flux.1 file (all-in-one, or its transformer alone), or None."""
    for prefix in (UNET, ""):
        found = families.of_flow_tensors(shapes, prefix)
        if found is not None:
            return Detected(found.group, False, "flow", found.arch)
    return None


def detect_flow_file(path: Path) -> Detected | None:
    """The flow family of a safetensors file (from its header only), or None for any other file."""
    if path.is_dir() or sniff_format(path) != SAFETENSORS:
        return None
    return detect_flow({k: tuple(m.shape) for k, m in read_safetensors_header(path).items()})


def load_flow_components(
    path: Path,
    precision: Precision,
    text_encoder_dirs: Sequence[Path] = (),
    vae_dirs: Sequence[Path] = (),
    modules: Sequence[Path] = (),
) -> Components:
    flow = load_flow_model(path, modules, text_encoder_dirs, vae_dirs, dtype=precision.dtype)
    family = families.family(flow.variant)
    parts = Components(
        arch=family.arch,
        label=family.group_label,
        pipeline_class=family.pipeline_class,
        unet=None,
        vae=flow.vae,
        text_encoder=flow.clip_l,
        text_encoder_2=flow.clip_g,
        tokenizer=flow.tokenizer,
        tokenizer_2=flow.tokenizer_2,
        scheduler_config=dict(flow.scheduler_config),
        transformer=flow.transformer,
        text_encoder_3=flow.t5,
        tokenizer_3=flow.t5_tokenizer,
        sources=dict(flow.sources),
    )
    for name, module in parts.modules().items():
        if any(p.is_meta for p in module.parameters()):
            raise CheckpointError(path, f"{name} weights are missing")
    return parts.to(precision)


FLOW_PIPELINES = ("StableDiffusion3Pipeline", "FluxPipeline")  # diffusers folders loaded here


def load_flow_folder(folder: Path, precision: Precision) -> Components:
    """A diffusers StableDiffusion3Pipeline / FluxPipeline folder, offline; our shipped tokenizers."""
    import json

    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from webui.core.models.t5_tokenizer import t5_tokenizer
    from webui.core.models.tokenizer import EOS_TOKEN, OPENCLIP_PAD_TOKEN, clip_tokenizer

    kw: dict[str, Any] = dict(local_files_only=True)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        flux = index.get("_class_name") == "FluxPipeline"
        t_cls: Any = FluxTransformer2DModel if flux else SD3Transformer2DModel
        transformer = t_cls.from_pretrained(folder, subfolder="transformer", **kw)
        vae: Any = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)  # type: ignore[no-untyped-call]
        clip_cls: Any = CLIPTextModel if flux else CLIPTextModelWithProjection
        clip_l = clip_cls.from_pretrained(folder, subfolder="text_encoder", **kw)
        clip_g = (
            None
            if flux
            else CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **kw)
        )
        t5 = T5EncoderModel.from_pretrained(
            folder, subfolder="text_encoder_2" if flux else "text_encoder_3", **kw
        )
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(folder, f"incomplete diffusers folder: {str(e).splitlines()[0]}") from e
    if flux:
        variant = "flux-dev" if transformer.config.guidance_embeds else "flux-schnell"
    else:
        variant = "sd3.5" if transformer.config.qk_norm else "sd3"
    family = families.family(variant)
    parts = Components(
        arch=family.arch,
        label=family.group_label,
        pipeline_class=family.pipeline_class,
        unet=None,
        vae=vae,
        text_encoder=clip_l,
        text_encoder_2=clip_g,
        tokenizer=clip_tokenizer(EOS_TOKEN),
        tokenizer_2=None if flux else clip_tokenizer(OPENCLIP_PAD_TOKEN),
        scheduler_config={k: v for k, v in sched.items() if not k.startswith("_")},
        transformer=transformer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer(family.text.t5_length),
    )
    for name, module in parts.modules().items():
        if any(p.is_meta for p in module.parameters()):
            raise CheckpointError(folder, f"{name} weights are missing")
    return parts.to(precision)
