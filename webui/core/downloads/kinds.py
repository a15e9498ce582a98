"""What a downloaded safetensors file is, from its header (names and shapes only), and where it goes.

A checkpoint is what the model loader itself recognises (`models.detect`, SD1/SD2/SDXL; the flow
families' blocks for SD3/Flux, whole or the transformer alone); a LoRA is what the network reader
takes (`networks.formats.split_key`); the rest are facts of the published layouts: a VAE is an
encoder and a decoder without a UNet, a ControlNet has its hint block (LDM or diffusers) or is a
T2I-Adapter, an upscaler is an ESRGAN/Real-ESRGAN network, a text encoder is CLIP, OpenCLIP or T5 alone,
and an embedding is a textual inversion's vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from webui.core.config import AppConfig
from webui.core.models.checkpoint_file import CheckpointError
from webui.core.models.detect import Shapes, detect
from webui.core.models.flow_components import detect_flow
from webui.core.networks.formats import split_key


def _any(keys: list[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _is_checkpoint(shapes: Shapes) -> bool:
    try:
        detect(Path("download"), shapes)
        return True
    except CheckpointError:
        return detect_flow(shapes) is not None


def detect_kind(shapes: Shapes) -> str | None:
    """ "checkpoint", "lora", "vae", "embedding", "controlnet", "upscaler" or "text_encoder"; None when
    the tensors are none of these."""
    keys = list(shapes)
    if not keys:
        return None
    if _any(keys, "control_model.", "input_hint_block.", "controlnet_cond_embedding.", "adapter.body."):
        return "controlnet"
    if _is_checkpoint(shapes):
        return "checkpoint"
    if any(split_key(k) is not None for k in keys[:200]):
        return "lora"
    if "string_to_param.*" in keys or "emb_params" in keys or set(keys) <= {"clip_l", "clip_g", "t5"}:
        return "embedding"
    stripped = [k.removeprefix("first_stage_model.") for k in keys]
    if _any(stripped, "encoder.down") and _any(stripped, "decoder.up"):
        return "vae"
    if _any(keys, "text_model.encoder.layers.", "encoder.block.0.layer.", "transformer.resblocks."):
        return "text_encoder"
    if "conv_first.weight" in keys or ("model.0.weight" in keys and _any(keys, "model.1.sub.")):
        return "upscaler"
    if _any(keys, "body.0.") and "body.0.weight" in keys:  # SRVGGNetCompact (Real-ESRGAN compact)
        return "upscaler"
    if _any(keys, "body.0.", "conv_in.") and not _any(keys, "encoder.", "decoder."):
        return "controlnet"  # a T2I-Adapter in its original layout (`body.<level>...`)
    if len(keys) == 1 and len(next(iter(shapes.values()))) == 2:
        return "embedding"  # a bare vector table (some trainers write one tensor under any name)
    return None


def folder_for(kind: str, config: AppConfig) -> Path:
    """The models folder a file of `kind` goes to (the first of its folders, A1111's layout)."""
    folders: Mapping[str, Path] = {
        "checkpoint": config.ckpt_dirs[0],
        "vae": config.vae_dirs[0],
        "lora": config.lora_dirs[0],
        "embedding": config.embeddings_dir,
        "controlnet": config.models_dir / "ControlNet",
        "upscaler": config.models_dir / "ESRGAN",
        "text_encoder": (config.text_encoder_dirs or (config.models_dir / "text_encoder",))[0],
    }
    return folders[kind]
