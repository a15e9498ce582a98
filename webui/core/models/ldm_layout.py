"""diffusers -> original LDM ("single-file", A1111) key layout for the UNet and the VAE.

diffusers converts LDM checkpoints to its own layout but not back. This module is the way back, so a
diffusers model can be written as a single file that A1111, ComfyUI and diffusers' own
`from_single_file` read.

Both mappings work on module names: every diffusers module prefix (`down_blocks.0.resnets.1.norm1`)
gets the LDM name of the same module (`input_blocks.2.0.in_layers.0`), and a key is renamed through the
longest prefix it starts with. A key no rule covers raises `LayoutError`: a checkpoint with silently
missing weights loads with random or meta tensors and fails far away.

The returned keys carry no prefix: callers add `model.diffusion_model.` (UNet) or `first_stage_model.`
(VAE). Tensors are not copied: each value is the input tensor or a view of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

# diffusers ResnetBlock2D sub-module -> LDM ResBlock sub-module (UNet)
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# diffusers ResnetBlock2D sub-module -> LDM ResnetBlock sub-module (VAE)
_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
# diffusers Attention (VAE mid block) -> LDM AttnBlock, whose projections are 1x1 convolutions
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_UNET_TYPES = {
    "down": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "mid": ("UNetMidBlock2DCrossAttn",),
}


class LayoutError(ValueError):
    """The model cannot be expressed in the original LDM layout."""


def _resnet(rules: dict[str, str], src: str, dst: str, names: Mapping[str, str]) -> None:
    for diffusers_name, ldm_name in names.items():
        rules[f"{src}.{diffusers_name}"] = f"{dst}.{ldm_name}"


def _block_types(config: Mapping[str, Any], field: str, allowed: Sequence[str]) -> list[str]:
    types = list(config[field])
    for t in types:
        if t not in allowed:
            raise LayoutError(f"{field} contains {t!r}; the LDM layout supports {', '.join(allowed)}")
    return types


def _layers_per_block(config: Mapping[str, Any]) -> int:
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise LayoutError(f"layers_per_block must be one int in the LDM layout, got {lpb!r}")
    return lpb


def unet_rules(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers UNet2DConditionModel module name -> LDM `UNetModel` module name."""
    down = _block_types(config, "down_block_types", _UNET_TYPES["down"])
    up = _block_types(config, "up_block_types", _UNET_TYPES["up"])
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid not in _UNET_TYPES["mid"]:
        raise LayoutError(f"mid_block_type {mid!r} is not supported in the LDM layout")
    if len(up) != len(down):
        raise LayoutError("the UNet has different numbers of down and up blocks")
    lpb = _layers_per_block(config)
    levels = len(down)
    rules = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.attentions.0": "middle_block.1",
    }
    _resnet(rules, "mid_block.resnets.0", "middle_block.0", _UNET_RESNET)
    _resnet(rules, "mid_block.resnets.1", "middle_block.2", _UNET_RESNET)
    # input_blocks: conv_in, then per level `lpb` (resnet[, attention]) blocks and one downsampler
    for level, kind in enumerate(down):
        for j in range(lpb):
            n = 1 + level * (lpb + 1) + j
            _resnet(rules, f"down_blocks.{level}.resnets.{j}", f"input_blocks.{n}.0", _UNET_RESNET)
            if kind.startswith("CrossAttn"):
                rules[f"down_blocks.{level}.attentions.{j}"] = f"input_blocks.{n}.1"
        if level < levels - 1:
            n = 1 + level * (lpb + 1) + lpb
            rules[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
    # output_blocks: per level `lpb + 1` (resnet[, attention][, upsampler]) blocks
    for level, kind in enumerate(up):
        attends = kind.startswith("CrossAttn")
        for j in range(lpb + 1):
            n = level * (lpb + 1) + j
            _resnet(rules, f"up_blocks.{level}.resnets.{j}", f"output_blocks.{n}.0", _UNET_RESNET)
            if attends:
                rules[f"up_blocks.{level}.attentions.{j}"] = f"output_blocks.{n}.1"
        if level < levels - 1:
            n = level * (lpb + 1) + lpb
            rules[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{n}.{2 if attends else 1}.conv"
    return rules


def vae_rules(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers AutoencoderKL module name -> LDM `AutoencoderKL` module name."""
    _block_types(config, "down_block_types", ("DownEncoderBlock2D",))
    _block_types(config, "up_block_types", ("UpDecoderBlock2D",))
    lpb = _layers_per_block(config)
    levels = len(config["down_block_types"])
    rules = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        rules[f"{part}.conv_in"] = f"{part}.conv_in"
        rules[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        rules[f"{part}.conv_out"] = f"{part}.conv_out"
        _resnet(rules, f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET)
        _resnet(rules, f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET)
        _resnet(rules, f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTENTION)
    for level in range(levels):
        src, dst = f"encoder.down_blocks.{level}", f"encoder.down.{level}"
        for j in range(lpb):
            _resnet(rules, f"{src}.resnets.{j}", f"{dst}.block.{j}", _VAE_RESNET)
        if level < levels - 1:
            rules[f"{src}.downsamplers.0.conv"] = f"{dst}.downsample.conv"
    # the decoder runs its levels from the deepest up; LDM numbers them by resolution, so in reverse
    for level in range(levels):
        src, dst = f"decoder.up_blocks.{level}", f"decoder.up.{levels - 1 - level}"
        for j in range(lpb + 1):
            _resnet(rules, f"{src}.resnets.{j}", f"{dst}.block.{j}", _VAE_RESNET)
        if level < levels - 1:
            rules[f"{src}.upsamplers.0.conv"] = f"{dst}.upsample.conv"
    return rules


def rename(key: str, rules: Mapping[str, str]) -> str:
    """`key` renamed through the longest module prefix in `rules`; LayoutError if none applies."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        ldm = rules.get(".".join(parts[:n]))
        if ldm is not None:
            return ".".join([ldm, *parts[n:]])
    raise LayoutError(f"no LDM name for {key!r}")


def _is_vae_attention_matrix(key: str, tensor: Tensor) -> bool:
    return ".mid_block.attentions.0.to_" in key and key.endswith(".weight") and tensor.ndim == 2


def unet_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """A diffusers UNet2DConditionModel state dict in LDM layout, without `model.diffusion_model.`."""
    rules = unet_rules(config)
    return {rename(key, rules): tensor for key, tensor in state_dict.items()}


def vae_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """A diffusers AutoencoderKL state dict in LDM layout, without `first_stage_model.`.

    The mid-block attention projections are Linear layers in diffusers and 1x1 convolutions in LDM:
    their (out, in) weights become (out, in, 1, 1).
    """
    rules = vae_rules(config)
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if _is_vae_attention_matrix(key, tensor):
            tensor = tensor.reshape(*tensor.shape, 1, 1)
        out[rename(key, rules)] = tensor
    return out
