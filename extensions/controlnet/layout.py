"""What a ControlNet file is: its key layout, the base model it was trained for, its diffusers config.

Two layouts ship:

- original (LDM): lllyasviel's `.pth` and the safetensors made from them. Keys are those of the UNet
  encoder (`input_blocks.*`, `middle_block.*`, `time_embed.*`, SDXL's `label_emb.*`) plus the control
  parts (`input_hint_block.*`, `zero_convs.*`, `middle_block_out.*`), either bare or under
  `control_model.` (a full model file also holds `model.diffusion_model.*`, which is ignored);
- diffusers: a `ControlNetModel` state dict (`controlnet_cond_embedding.*`, `controlnet_down_blocks.*`),
  the usual form of SDXL ControlNets.

The original layout is renamed with diffusers' own single-file helper (`convert_controlnet_checkpoint`),
which does not cover SDXL's `label_emb` (renamed here). The config is read from tensor shapes plus the
rules of the base family (attention heads, SDXL's time-embedding width), and those two come from the
base model's UNet config when the caller has it, since a ControlNet is a copy of its base's encoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

LDM_PREFIX = "control_model."
BASES = ("sd1", "sd2", "sdxl")
BASE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
_LABEL_EMB = {
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
}
_SDXL_TIME_EMBED_DIM = 256  # real SDXL's addition_time_embed_dim (not visible in the weights)
_SD1_HEADS = 8
_HEAD_WIDTH = 64  # SD2 and SDXL attention heads are 64 wide


class ControlNetFileError(ValueError):
    """The file is not a ControlNet this extension can load; the message says why."""


def foreign_kind(keys: Iterable[str]) -> tuple[str, str] | None:
    """(family, kind) of an SD3 or Flux ControlNet from its key names; None for any other file. These
    are listed with their family; flow_layout.py says which kinds run (the others are refused by name):

    - Flux, diffusers' `FluxControlNetModel` (InstantX's, and the Union ones with a mode embedder);
    - Flux, XLabs' layout (`double_blocks.*`, `input_hint_block.*`, `controlnet_blocks.*`);
    - SD3 / SD3.5, diffusers' `SD3ControlNetModel` (InstantX's; `pos_embed_input`, `controlnet_blocks`).
    """
    ks = set(keys)
    blocks = any(k.startswith("controlnet_blocks.") for k in ks)
    if "controlnet_x_embedder.weight" in ks:
        union = "controlnet_mode_embedder.weight" in ks
        return "Flux", "InstantX Union (FluxControlNetModel)" if union else "InstantX (FluxControlNetModel)"
    if blocks and any(k.startswith(("double_blocks.", "single_blocks.")) for k in ks):
        return "Flux", "XLabs"
    if blocks and ("pos_embed_input.proj.weight" in ks or any(k.startswith("joint_blocks.") for k in ks)):
        union = "controlnet_mode_embedder.weight" in ks
        return "SD3", "Union (SD3ControlNetModel)" if union else "SD3ControlNetModel"
    return None


def not_wired(family: str, kind: str) -> str:
    return (
        f"a {family} ControlNet ({kind}): {family} ControlNets are recognised but not wired into "
        "generation yet; use an SD 1.x, SD 2.x or SDXL ControlNet"
    )


def layout_of(sd: Mapping[str, torch.Tensor]) -> str:
    """ "ldm" or "diffusers"; ControlNetFileError for anything else."""
    foreign = foreign_kind(sd)
    if foreign is not None:
        raise ControlNetFileError(not_wired(*foreign))
    if "difference" in sd or LDM_PREFIX + "difference" in sd:
        raise ControlNetFileError(
            "a 'difference' ControlNet (weights relative to SD 1.5): not supported; use the full file"
        )
    if any(k.startswith("lora_controlnet") for k in sd):
        raise ControlNetFileError(
            "a Control-LoRA file: it is made dense from the checkpoint's UNet when a job uses it"
        )
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        return "diffusers"
    if "input_hint_block.0.weight" in sd or LDM_PREFIX + "input_hint_block.0.weight" in sd:
        return "ldm"
    raise ControlNetFileError("no ControlNet weights found (neither the original nor the diffusers layout)")


def to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in diffusers' `ControlNetModel` layout (tensors are not copied)."""
    if layout_of(sd) == "diffusers":
        return dict(sd)
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if LDM_PREFIX + "input_hint_block.0.weight" in sd:
        sd = {k[len(LDM_PREFIX) :]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    out: dict[str, torch.Tensor] = convert_controlnet_checkpoint(dict(sd), {"layers_per_block": _lpb_ldm(sd)})
    for ldm, name in _LABEL_EMB.items():  # SDXL's pooled-text + size embedding
        for kind in ("weight", "bias"):
            if f"{ldm}.{kind}" in sd:
                out[f"{name}.{kind}"] = sd[f"{ldm}.{kind}"]
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ControlNetFileError(f"incomplete original-layout ControlNet: no weights for {missing[0]}")
    return out


def _lpb_ldm(sd: Mapping[str, torch.Tensor]) -> int:
    """Layers per block of an original-layout ControlNet: input blocks before the first downsampler."""
    for n in range(1, 64):
        if f"input_blocks.{n}.0.op.weight" in sd:
            return n - 1
    raise ControlNetFileError("original-layout ControlNet without a downsampling input block")


def base_of(sd: Mapping[str, torch.Tensor]) -> str:
    """The base family ("sd1", "sd2" or "sdxl") of a diffusers-layout state dict."""
    if "add_embedding.linear_1.weight" in sd:
        return "sdxl"
    proj = next((v for k, v in sd.items() if k.endswith(".proj_in.weight")), None)
    return "sd2" if proj is not None and proj.ndim == 2 else "sd1"


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(
    sd: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A `ControlNetModel` config for a diffusers-layout state dict.

    Widths, depths and block types come from the tensors. Attention heads and SDXL's time-embedding
    width leave no trace in the weights: they are taken from `unet_config` (the base model's UNet)
    when given, else from the real family (SD1: 8 heads; SD2/SDXL: 64-wide heads; SDXL: 256).
    """
    base = base_of(sd)
    levels = _count(sd, r"down_blocks\.(\d+)\.resnets\.")
    channels = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
    lpb = _count(sd, r"down_blocks\.0\.resnets\.(\d+)\.")
    types, depths = [], []
    for i in range(levels):
        depth = _count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        types.append("CrossAttnDownBlock2D" if depth else "DownBlock2D")
        depths.append(max(depth, 1))
    attn_k = next(v for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    hint = [int(sd["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    blocks = _count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    hint += [int(sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]) for i in range(1, blocks, 2)]
    if base == "sd1":
        heads: Any = _SD1_HEADS
    else:
        heads = [max(1, c // _HEAD_WIDTH) for c in channels]
    cfg: dict[str, Any] = {
        "in_channels": int(sd["conv_in.weight"].shape[1]),
        "conditioning_channels": int(sd["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        "down_block_types": tuple(types),
        "block_out_channels": tuple(channels),
        "layers_per_block": lpb,
        "cross_attention_dim": int(attn_k.shape[1]),
        "transformer_layers_per_block": tuple(depths),
        "attention_head_dim": heads,
        "use_linear_projection": base != "sd1",
        "conditioning_embedding_out_channels": tuple(hint),
        "norm_num_groups": 32,
    }
    if base == "sdxl":
        cfg.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=_SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]),
        )
    if unet_config is not None:
        for key in (
            "attention_head_dim",
            "num_attention_heads",
            "addition_time_embed_dim",
            "norm_num_groups",
        ):
            if unet_config.get(key) is not None and (key != "addition_time_embed_dim" or base == "sdxl"):
                cfg[key] = unet_config[key]
    return cfg


def check_compatible(cfg: Mapping[str, Any], base: str, unet_config: Mapping[str, Any], name: str) -> None:
    """ControlNetFileError unless a ControlNet with `cfg` can drive a UNet with `unet_config`."""
    unet_sdxl = unet_config.get("addition_embed_type") == "text_time"
    cn_sdxl = base == "sdxl"
    if unet_sdxl != cn_sdxl or unet_config.get("cross_attention_dim") != cfg["cross_attention_dim"]:
        unet_base = "SDXL" if unet_sdxl else f"SD (text width {unet_config.get('cross_attention_dim')})"
        raise ControlNetFileError(
            f"{name} is a ControlNet for {BASE_LABELS[base]} and cannot be used with this {unet_base} "
            "checkpoint; pick a ControlNet made for the checkpoint's base model"
        )
    unet_channels = tuple(unet_config.get("block_out_channels", ()))
    if unet_channels[: len(cfg["block_out_channels"])] != tuple(cfg["block_out_channels"]):
        raise ControlNetFileError(
            f"{name}: its block widths {list(cfg['block_out_channels'])} do not match the checkpoint's "
            f"{list(unet_channels)}"
        )
