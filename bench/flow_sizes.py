"""Flux- and SD3.5-Large-size transformers for the load benchmark: official configs, meta-device
parameter counts, and random-weight files in the original layouts (BFL's bare Flux transformer,
Stability's `model.diffusion_model.` MMDiT), written a tensor at a time.

`depth_scale` < 1 keeps the official widths and takes that fraction of the blocks (at least one of
each kind), for machines without the RAM or disk for a 24 GB file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"
SIZES = {"flux-dev": "FluxTransformer2DModel", "sd3.5-large": "SD3Transformer2DModel"}
# what the model cards say, in billions of parameters
OFFICIAL_BILLIONS = {"flux-dev": 11.9, "sd3.5-large": 8.1}


def official_config(name: str, depth_scale: float = 1.0) -> dict[str, Any]:
    """The official transformer config, with its block counts scaled by `depth_scale`."""
    raw = json.loads((CONFIGS / f"{name}.transformer.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in raw.items() if not k.startswith("_")}
    for key in ("num_layers", "num_single_layers"):
        if key in config:
            config[key] = max(1, round(config[key] * depth_scale))
    return config


def meta_transformer(name: str, depth_scale: float = 1.0) -> Any:
    """The transformer of that config on the meta device (shapes, no memory)."""
    import diffusers

    cls = getattr(diffusers, SIZES[name])
    with torch.device("meta"):
        return cls(**official_config(name, depth_scale))


def parameter_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def original_shapes(name: str, depth_scale: float = 1.0) -> dict[str, tuple[int, ...]]:
    """{original key: shape} of a file of that size, in the layout people download."""
    from webui.core.models import flux_layout, sd3_layout

    sd = meta_transformer(name, depth_scale).state_dict()
    if name.startswith("flux"):
        return {k: tuple(v.shape) for k, v in flux_layout.to_original(sd).items()}
    return {"model.diffusion_model." + k: tuple(v.shape) for k, v in sd3_layout.to_original(sd).items()}


def file_bytes(name: str, depth_scale: float = 1.0, dtype: torch.dtype = torch.bfloat16) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    return sum(math.prod(s) for s in original_shapes(name, depth_scale).values()) * size


def write_random(
    path: Path, name: str, depth_scale: float = 1.0, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """A random-weight file of that size (normal, std 0.02; norms 1), one tensor in memory at a time."""
    from webui.core.models.safetensors_writer import Planned, write_streaming

    plan = [Planned(k, dtype, s) for k, s in original_shapes(name, depth_scale).items()]
    gen = torch.Generator().manual_seed(0)

    def produce(item: Planned) -> torch.Tensor:
        if item.name.endswith((".scale", "norm.weight", "ln_q.weight", "ln_k.weight")):
            return torch.ones(item.shape, dtype=dtype)
        return (torch.randn(item.shape, generator=gen) * 0.02).to(dtype)

    write_streaming(path, plan, produce, {"bench": f"{name} random weights, depth x{depth_scale:g}"})
    return path
