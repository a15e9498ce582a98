"""Tiny network files for tests and benchmarks, with key names taken from a real loaded model.

`write_tiny_lora(path, components, fmt=...)` walks the given model's UNet and text encoders and writes a
random low-rank network for the chosen modules in one of the formats users download:

- "kohya": `lora_unet_*` / `lora_te_*` (SDXL: `lora_te1_*`, `lora_te2_*`, UNet in LDM names as kohya's
  SDXL trainer writes them), `.lora_down.weight`, `.lora_up.weight`, `.alpha`.
- "peft": diffusers' `unet.<module>.lora_A.weight` / `.lora_B.weight`, `text_encoder.text_model.<...>`.
- "locon": kohya names over attention and the ResNet 3x3 convolutions (LyCORIS LoCon).
- "loha", "lokr", "full": LyCORIS Hadamard, Kronecker and full-difference networks.

Unlike a freshly initialised trainer output (lora_up = 0), every factor is random, so weight 1 changes
the model's output.

`write_tiny_flow_lora(path, components, fmt=...)` does the same for SD3 / SD3.5 and Flux models (loaded
Components): "kohya" keys in the transformer's original layout (`lora_unet_double_blocks_0_img_attn_qkv`,
`lora_unet_joint_blocks_0_x_block_attn_qkv`: fused q/k/v get one LoRA of the fused shape) and
`lora_te1_` for CLIP-L, or "peft" keys in diffusers names (`transformer.transformer_blocks.0.attn.to_q`,
`text_encoder.text_model.`).

`write_header_only` writes a safetensors file whose header claims tensors its body does not hold:
anything that reads past the header fails on it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from webui.core import families
from webui.core.models.ldm_layout import rename, unet_rules
from webui.core.networks.formats import TE1, TE2, UNET

FORMATS = ("kohya", "peft", "locon", "loha", "lokr", "full")
_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
_TEXT = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
_CONV = ("conv1", "conv2", "conv_shortcut")


def _is_sdxl(components: Any) -> bool:
    return getattr(components, "text_encoder_2", None) is not None


def default_modules(components: Any, fmt: str = "kohya") -> dict[str, list[str]]:
    """{component: [dotted module names]}: attention and text-encoder projections (what kohya's trainer
    targets by default), plus the ResNet convolutions for LyCORIS formats."""
    convs = fmt in ("locon", "loha", "lokr", "full")
    out: dict[str, list[str]] = {}
    for component, ends in ((UNET, _ATTENTION), (TE1, _TEXT), (TE2, _TEXT)):
        model = getattr(components, component, None)
        if model is None:
            continue
        names = []
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                continue
            conv = convs and component == UNET and ".resnets." in name and name.endswith(_CONV)
            if name.endswith(ends) or conv:
                names.append(name)
        out[component] = names
    return out


def _file_name(components: Any, fmt: str, component: str, module: str) -> str:
    """The key stem a file in `fmt` uses for a module of our model."""
    short = module.removeprefix("text_model.")
    if fmt == "peft":
        return f"{component}.{module}" if component == UNET else f"{component}.text_model.{short}"
    if component == UNET:
        name = module
        if _is_sdxl(components):
            name = rename(f"{module}.weight", unet_rules(components.unet.config)).removesuffix(".weight")
        return "lora_unet_" + name.replace(".", "_")
    prefix = "lora_te_" if not _is_sdxl(components) else ("lora_te1_" if component == TE1 else "lora_te2_")
    return prefix + ("text_model." + short).replace(".", "_")


def _factors(
    fmt: str, shape: Sequence[int], rank: int, randn: Callable[..., Tensor]
) -> dict[str, Tensor]:  # fmt: skip
    out_f, in_f = shape[0], shape[1]
    kernel = tuple(shape[2:])
    fan_in = max(1, in_f * (kernel[0] * kernel[1] if kernel else 1))
    if fmt in ("kohya", "locon", "peft"):
        down = randn(rank, in_f, *kernel) * fan_in**-0.5
        up = randn(out_f, rank, *((1, 1) if kernel else ())) * rank**-0.5
        if fmt == "peft":
            return {".lora_A.weight": down, ".lora_B.weight": up}
        return {".lora_down.weight": down, ".lora_up.weight": up}
    if fmt == "loha":
        flat_in = fan_in
        return {
            ".hada_w1_a": randn(out_f, rank) * rank**-0.5,
            ".hada_w1_b": randn(rank, flat_in) * flat_in**-0.25,
            ".hada_w2_a": randn(out_f, rank) * rank**-0.5,
            ".hada_w2_b": randn(rank, flat_in) * flat_in**-0.25,
        }
    if fmt == "lokr":
        f1 = 2 if out_f % 2 == 0 and in_f % 2 == 0 else 1
        return {
            ".lokr_w1": randn(f1, f1),
            ".lokr_w2_a": randn(out_f // f1, rank) * rank**-0.5,
            ".lokr_w2_b": randn(rank, (in_f // f1) * (kernel[0] * kernel[1] if kernel else 1)) * fan_in**-0.5,
        }
    if fmt == "full":
        return {".diff": randn(*shape) * fan_in**-0.5}
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def tiny_lora_state_dict(
    components: Any,
    fmt: str = "kohya",
    rank: int = 2,
    seed: int = 0,
    modules: Mapping[str, Sequence[str]] | None = None,
    alpha: float | None = None,
) -> dict[str, Tensor]:
    """The tensors `write_tiny_lora` writes. `alpha` None: alpha = rank (scale 1); peft files carry none."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    chosen = modules if modules is not None else default_modules(components, fmt)
    sd: dict[str, Tensor] = {}
    for component, names in chosen.items():
        model = getattr(components, component)
        found = dict(model.named_modules())
        for name in names:
            weight = found[name].weight
            stem = _file_name(components, fmt, component, name)
            for suffix, tensor in _factors(fmt, tuple(weight.shape), rank, randn).items():
                sd[stem + suffix] = tensor.contiguous()
            if fmt not in ("peft", "full"):
                sd[stem + ".alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    return sd


FLOW_FORMATS = ("kohya", "peft")
_FLOW_BLOCKS = ("double_blocks.", "single_blocks.", "joint_blocks.")  # original names of the blocks
_FLOW_BLOCKS_DIFFUSERS = ("transformer_blocks.", "single_transformer_blocks.")


def _clip_l_linears(components: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (name.removeprefix("text_model."), tuple(m.weight.shape))
        for name, m in components.text_encoder.named_modules()
        if isinstance(m, torch.nn.Linear) and name.endswith(_TEXT)
    ]


def flow_lora_targets(components: Any, fmt: str = "kohya") -> dict[str, tuple[int, ...]]:
    """{key stem: weight shape} of every transformer-block Linear (and CLIP-L projection) a tiny flow
    LoRA covers: kohya stems in the original layout (fused shapes), peft stems in diffusers names."""
    if fmt not in FLOW_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FLOW_FORMATS)}")
    transformer = components.transformer
    modules = dict(transformer.named_modules())
    out: dict[str, tuple[int, ...]] = {}
    if fmt == "kohya":
        for rule in families.of(components).original_names(transformer):
            if not (rule.original.startswith(_FLOW_BLOCKS) and rule.original.endswith(".weight")):
                continue
            parts = [modules[p.removesuffix(".weight")] for p in rule.parts]
            if all(isinstance(m, torch.nn.Linear) for m in parts):
                shape: tuple[int, ...] = (sum(m.weight.shape[0] for m in parts), parts[0].weight.shape[1])
                out["lora_unet_" + rule.original.removesuffix(".weight").replace(".", "_")] = shape
        for name, shape in _clip_l_linears(components):
            out["lora_te1_text_model_" + name.replace(".", "_")] = shape
        return out
    for name, m in modules.items():
        if isinstance(m, torch.nn.Linear) and name.startswith(_FLOW_BLOCKS_DIFFUSERS):
            out[f"transformer.{name}"] = tuple(m.weight.shape)
    for name, shape in _clip_l_linears(components):
        out[f"text_encoder.text_model.{name}"] = shape
    return out


def tiny_flow_lora_state_dict(
    components: Any, fmt: str = "kohya", rank: int = 2, seed: int = 0, alpha: float | None = None
) -> dict[str, Tensor]:
    """The tensors `write_tiny_flow_lora` writes; kohya files carry `.alpha` (None: alpha = rank)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    sd: dict[str, Tensor] = {}
    for stem, shape in flow_lora_targets(components, fmt).items():
        for suffix, tensor in _factors(fmt, shape, rank, randn).items():
            sd[stem + suffix] = tensor.contiguous()
        if fmt == "kohya":
            sd[stem + ".alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    return sd


def write_tiny_flow_lora(
    path: Path,
    components: Any,
    fmt: str = "kohya",
    rank: int = 2,
    seed: int = 0,
    alpha: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A random LoRA for a loaded SD3 / Flux model at `path` (.safetensors)."""
    sd = tiny_flow_lora_state_dict(components, fmt, rank, seed, alpha)
    meta = {"ss_output_name": path.stem, "ss_base_model_version": families.of(components).group}
    meta.update(metadata or {})
    return _atomic(path, lambda tmp: save_file(sd, str(tmp), metadata=meta))


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_tiny_lora(
    path: Path,
    components: Any,
    fmt: str = "kohya",
    rank: int = 2,
    seed: int = 0,
    modules: Mapping[str, Sequence[str]] | None = None,
    alpha: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A random network for `components` (a loaded Components or a TinyModel) at `path` (.safetensors)."""
    sd = tiny_lora_state_dict(components, fmt, rank, seed, modules, alpha)
    meta = {
        "ss_output_name": path.stem,
        "ss_base_model_version": "sdxl_base_v1-0" if _is_sdxl(components) else "sd_v1",
        "ss_network_module": "networks.lora" if fmt in ("kohya", "peft") else "lycoris.kohya",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha if alpha is not None else rank),
        "ss_tag_frequency": json.dumps({"1_tiny": {"tiny": 1}}),
    }
    meta.update(metadata or {})
    return _atomic(path, lambda tmp: save_file(sd, str(tmp), metadata=meta))


def write_header_only(path: Path, metadata: Mapping[str, str], claimed_tensors: int = 1) -> Path:
    """A `.safetensors` whose header lists `claimed_tensors` 1 MiB tensors that the file does not hold."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    size = 1 << 20
    for i in range(claimed_tensors):
        header[f"lora_unet_m{i}.lora_down.weight"] = {
            "dtype": "U8",
            "shape": [size],
            "data_offsets": [i * size, (i + 1) * size],
        }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return _atomic(path, lambda tmp: tmp.write_bytes(struct.pack("<Q", len(raw)) + raw))
