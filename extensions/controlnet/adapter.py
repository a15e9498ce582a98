"""T2I-Adapters: what a file is, its renaming to diffusers' layout, its `T2IAdapter` config.

An adapter turns the control image into one feature map per UNet level, once per job; the UNet adds
them inside its encoder (`down_intrablock_additional_residuals`). Layouts:

- original (TencentARC's `t2iadapter_*.pth`): `conv_in.*`, then a flat `body.<n>.*` of resnet blocks,
  `num_res_blocks` per level (`body.<level * num_res_blocks + j>`; the first of a wider level has an
  `in_conv`). The light adapter nests them: `body.<level>.body.<j>`, with `in_conv`/`out_conv` per level;
- diffusers: the same under `adapter.`, as `adapter.body.<level>.resnets.<j>`.

The kind is read from the input convolution: its input width is the image channels (3, or 1 for
sketch/canny adapters) times the pixel-unshuffle factor squared (8 for SD1.x, 16 for SDXL adapters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .layout import ControlNetFileError


def is_adapter(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensors are a T2I-Adapter's (its blocks are named `body`; a ControlNet has none)."""
    return any(k.startswith(("body.0.", "adapter.body.0.")) for k in sd)


def to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter's state dict in diffusers' `T2IAdapter` layout."""
    if any(k.startswith("adapter.") for k in sd):
        return dict(sd)
    out: dict[str, torch.Tensor] = {}
    if "conv_in.weight" not in sd:  # light adapter: body.<level>.body.<j>
        for key, value in sd.items():
            out["adapter." + re.sub(r"^body\.(\d+)\.body\.(\d+)\.", r"body.\1.resnets.\2.", key)] = value
        return out
    per_level = _res_blocks_original(sd)
    for key, value in sd.items():
        m = re.match(r"^body\.(\d+)\.(.+)$", key)
        if m is None:
            out["adapter." + key] = value
            continue
        level, j = divmod(int(m.group(1)), per_level)
        rest = m.group(2)
        out[f"adapter.body.{level}.{rest if rest.startswith('in_conv') else f'resnets.{j}.{rest}'}"] = value
    return out


def _res_blocks_original(sd: Mapping[str, torch.Tensor]) -> int:
    """Resnet blocks per level of an original full adapter: the index of the first `in_conv`, or all
    blocks when the widths never change."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"^body\.(\d+)\.", k))}
    firsts = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^body\.(\d+)\.in_conv\.weight$", k)))
    return firsts[0] if firsts else len(blocks)


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A `T2IAdapter` config for a diffusers-layout adapter state dict."""
    light = "adapter.body.0.out_conv.weight" in sd
    levels = _count(sd, r"adapter\.body\.(\d+)\.")
    blocks = _count(sd, r"adapter\.body\.0\.resnets\.(\d+)\.")
    channels = [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(levels)]
    first = sd["adapter.body.0.in_conv.weight" if light else "adapter.conv_in.weight"]
    unshuffled = int(first.shape[1])
    if light:
        factor, kind = 8, "light_adapter"
        # one block per width, then one more at the last width
        channels = [int(sd[f"adapter.body.{i}.out_conv.weight"].shape[0]) for i in range(levels - 1)]
    elif unshuffled % 256 == 0 and unshuffled // 256 in (1, 3):
        factor, kind = 16, "full_adapter_xl"
    elif unshuffled % 64 == 0 and unshuffled // 64 in (1, 3):
        factor, kind = 8, "full_adapter"
    else:
        raise ControlNetFileError(f"T2I-Adapter with an unknown input width {unshuffled}")
    return {
        "in_channels": unshuffled // factor**2,
        "channels": channels,
        "num_res_blocks": blocks,
        "downscale_factor": factor,
        "adapter_type": kind,
    }


def base_of(cfg: Mapping[str, Any]) -> str:
    return "sdxl" if cfg["adapter_type"] == "full_adapter_xl" else "sd1"


def check_compatible(cfg: Mapping[str, Any], unet_config: Mapping[str, Any], name: str) -> None:
    """ControlNetFileError unless the adapter's features fit the UNet's levels."""
    unet_sdxl = unet_config.get("addition_embed_type") == "text_time"
    if unet_sdxl != (base_of(cfg) == "sdxl"):
        made_for, model = ("SDXL", "SD") if not unet_sdxl else ("SD 1.x", "SDXL")
        raise ControlNetFileError(
            f"{name} is a T2I-Adapter for {made_for} and cannot be used with this {model} checkpoint; "
            "pick an adapter made for the checkpoint's base model"
        )
    widths = list(unet_config.get("block_out_channels", ()))
    if not unet_sdxl and list(cfg["channels"])[: len(widths)] != widths:
        raise ControlNetFileError(
            f"{name}: its widths {list(cfg['channels'])} do not match the checkpoint's {widths}"
        )
