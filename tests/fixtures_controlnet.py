"""Tiny ControlNets of the real architecture, matching the tiny SD1 and SDXL models, in both file layouts.

A ControlNet is a copy of its base UNet's encoder plus a hint encoder (conditioning image -> latent
size, three stride-2 convolutions as in the real model), one zero convolution per encoder output and
one after the middle block. Here every weight, the "zero" convolutions included, is drawn from a seeded
generator, so the residuals are far from zero and a unit visibly changes an image.

Layouts written:
- "diffusers": the `ControlNetModel` state dict as it is (SDXL ControlNets usually ship like this);
- "ldm": lllyasviel's original layout under `control_model.` (`input_hint_block.*`, `zero_convs.*`,
  `middle_block_out.*`, the encoder as in a checkpoint's UNet);
- "ldm-bare": the same keys without the prefix (the fp16 safetensors most users have), as a `.pth`
  pickle, so the weights-only pickle path is covered too.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file
from torch import Tensor

from webui.core.models.ldm_layout import rename, unet_rules
from webui.core.models.tiny import _randomize, unet_config

HINT_CHANNELS = (8, 16, 16, 32)  # four widths: three stride-2 steps, the VAE's factor 8
LAYOUTS = ("diffusers", "ldm", "ldm-bare")


def controlnet_config(arch: str) -> dict[str, Any]:
    """The ControlNetModel config that matches tiny `arch`'s UNet (sd1 or sdxl)."""
    unet = unet_config(arch)
    keep = (
        "in_channels", "down_block_types", "block_out_channels", "layers_per_block", "norm_num_groups",
        "cross_attention_dim", "attention_head_dim", "use_linear_projection", "transformer_layers_per_block",
        "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
    )  # fmt: skip
    cfg = {k: unet[k] for k in keep if k in unet}
    cfg["conditioning_embedding_out_channels"] = HINT_CHANNELS
    return cfg


def build_tiny_controlnet(arch: str, seed: int = 0) -> Any:
    """A tiny ControlNet for tiny `arch`, weights from `seed`, eval mode, fp32, CPU."""
    gen = torch.Generator().manual_seed(seed)
    cls: Any = ControlNetModel
    with torch.random.fork_rng(devices=[]):
        model = cls(**controlnet_config(arch))
    _randomize(model, gen)
    return model.eval()


def ldm_names(model: Any) -> dict[str, str]:
    """{diffusers key: original-layout key (no prefix)} of a ControlNet's state dict."""
    cfg = dict(model.config)
    cfg["up_block_types"] = ("UpBlock2D",) * len(cfg["down_block_types"])  # unet_rules wants a decoder
    rules = unet_rules(cfg)
    rules["controlnet_cond_embedding.conv_in"] = "input_hint_block.0"
    rules["controlnet_cond_embedding.conv_out"] = "input_hint_block.14"
    for i in range(2 * (len(HINT_CHANNELS) - 1)):
        rules[f"controlnet_cond_embedding.blocks.{i}"] = f"input_hint_block.{2 * (i + 1)}"
    for i in range(len(model.controlnet_down_blocks)):
        rules[f"controlnet_down_blocks.{i}"] = f"zero_convs.{i}.0"
    rules["controlnet_mid_block"] = "middle_block_out.0"
    return {k: rename(k, rules) for k in model.state_dict()}


def to_ldm(model: Any, prefix: str = "control_model.") -> dict[str, Tensor]:
    """The ControlNet's state dict in the original layout."""
    names = ldm_names(model)
    return {prefix + names[k]: v.detach().clone() for k, v in model.state_dict().items()}


def save_controlnet(model: Any, path: Path, layout: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers":
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_file(sd, str(path))
    elif layout == "ldm":
        save_file(to_ldm(model), str(path))
    elif layout == "ldm-bare":
        torch.save(to_ldm(model, prefix=""), path)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return path


def write_controlnets(models_dir: Path) -> dict[tuple[str, str], Path]:
    """`models_dir/ControlNet/tiny-cn-<arch>-<layout>.<ext>` for sd1 and sdxl in every layout, the same
    weights (seed 1 for sd1, 2 for sdxl) in each layout: {(arch, layout): path}."""
    out = {}
    for arch, seed in (("sd1", 1), ("sdxl", 2)):
        model = build_tiny_controlnet(arch, seed)
        for layout in LAYOUTS:
            ext = ".pth" if layout == "ldm-bare" else ".safetensors"
            out[arch, layout] = save_controlnet(
                model, models_dir / "ControlNet" / f"tiny-cn-{arch}-{layout}{ext}", layout
            )
    return out


def extension_modules(data_dir: Path) -> SimpleNamespace:
    """The controlnet extension's modules, imported the way the plugin host imports them."""
    from webui.core.config import AppConfig
    from webui.plugins.host import PluginHost

    host = PluginHost.for_config(AppConfig.for_data_dir(data_dir), include_pip=False)
    ext = host.extension("controlnet")
    assert ext.loaded, ext.error
    pkg = ext.module.__package__
    names = ("layout", "models", "preprocess", "images", "units", "infotext", "residuals", "routes")
    return SimpleNamespace(**{n: importlib.import_module(f"{pkg}.{n}") for n in names})


# ---- T2I-Adapters -----------------------------------------------------------------------------------

ADAPTER_KINDS = {  # name: T2IAdapter config matching a tiny model's UNet widths
    "sd1": dict(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                adapter_type="full_adapter"),
    "sd1-gray": dict(in_channels=1, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                     adapter_type="full_adapter"),
    "sd1-light": dict(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                      adapter_type="light_adapter"),
    "sdxl": dict(in_channels=3, channels=[32, 64, 64, 64], num_res_blocks=2, downscale_factor=16,
                 adapter_type="full_adapter_xl"),
}  # fmt: skip


def build_tiny_adapter(kind: str, seed: int = 0) -> Any:
    from diffusers import T2IAdapter

    gen = torch.Generator().manual_seed(seed)
    cls: Any = T2IAdapter
    with torch.random.fork_rng(devices=[]):
        model = cls(**ADAPTER_KINDS[kind])
    _randomize(model, gen)
    return model.eval()


def adapter_to_original(model: Any) -> dict[str, Tensor]:
    """TencentARC's layout: a flat `body.<level * blocks + j>` (full) or `body.<level>.body.<j>` (light)."""
    cfg = model.config
    out = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("adapter.")
        parts = key.split(".")
        if parts[0] == "body" and cfg.adapter_type == "light_adapter" and parts[2] == "resnets":
            key = ".".join(["body", parts[1], "body", *parts[3:]])
        elif parts[0] == "body" and cfg.adapter_type != "light_adapter":
            level = int(parts[1])
            j = int(parts[3]) if parts[2] == "resnets" else 0
            rest = parts[4:] if parts[2] == "resnets" else parts[2:]
            key = ".".join(["body", str(level * cfg.num_res_blocks + j), *rest])
        out[key] = value.detach().clone()
    return out


def write_adapters(folder: Path) -> dict[tuple[str, str], Path]:
    """`folder/tiny-t2i-<kind>-<layout>.<ext>`: original layout as .pth, diffusers as .safetensors."""
    out = {}
    for seed, kind in enumerate(ADAPTER_KINDS, start=10):
        model = build_tiny_adapter(kind, seed)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"tiny-t2i-{kind}-diffusers.safetensors"
        save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(path))
        out[kind, "diffusers"] = path
        path = folder / f"tiny-t2i-{kind}-original.pth"
        torch.save(adapter_to_original(model), path)
        out[kind, "original"] = path
    return out
