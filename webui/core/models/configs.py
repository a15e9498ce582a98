"""The shipped diffusers-format configs, one folder per architecture, under ``webui/assets/configs``.

Each folder holds ``model_index.json`` and a config per component (``unet``, ``vae``, ``text_encoder``,
``text_encoder_2``, ``scheduler``); tokenizers are named in ``model_index.json`` but built by
``webui.core.models.tokenizer.clip_tokenizer(pad_token_for(arch, name))``. Nothing is read at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webui.core import families

# The diffusion (LDM) families ship a diffusers config folder each; the flow families (SD3, Flux) are
# built from the official configs in code (webui.core.models.flow_loader, tiny_flow).
ARCHITECTURES: tuple[str, ...] = tuple(f.arch for f in families.FAMILIES if not f.flow_matching)


def configs_root() -> Path:
    return Path(__file__).resolve().parents[2] / "assets" / "configs"


def config_dir(arch: str) -> Path:
    """The folder of one architecture, usable as ``from_single_file(..., config=str(config_dir(arch)))``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}")
    return configs_root() / arch


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_model_index(arch: str) -> dict[str, Any]:
    """The architecture's ``model_index.json`` (pipeline class, component classes, pipeline options)."""
    return _read_json(config_dir(arch) / "model_index.json")


def load_component_config(arch: str, component: str) -> dict[str, Any]:
    """A fresh dict of one component's config, e.g. ``load_component_config("sdxl", "unet")``."""
    folder = config_dir(arch)
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    path = folder / component / name
    if not path.is_file():
        present = sorted(p.parent.name for p in folder.glob("*/*.json"))
        raise ValueError(f"architecture {arch!r} has no {component!r} config; it has: {', '.join(present)}")
    return _read_json(path)


def pad_token_for(arch: str, component: str) -> str:
    """The pad token of ``component`` ("tokenizer" or "tokenizer_2") in ``arch`` (the family says)."""
    return families.family(arch).pad_token(component)
