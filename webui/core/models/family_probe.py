"""The family of a listed model without loading it: a safetensors file from its header, a diffusers
folder from its JSON configs. For the model lists (`/sdapi/v1/sd-models`, the studio's top bar); None
when it cannot be told this cheaply (a pickled `.ckpt`, an unreadable file or folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webui.core import families
from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    CheckpointError,
    read_safetensors_header,
    sniff_format,
)
from webui.core.models.detect import detect, detect_folder, read_sidecar_yaml
from webui.core.models.flow_components import FLOW_PIPELINES, detect_flow


def family_of_path(path: Path) -> families.Family | None:
    try:
        if path.is_dir():
            return _folder_family(path)
        if sniff_format(path) != SAFETENSORS:
            return None
        shapes = {k: tuple(m.shape) for k, m in read_safetensors_header(path).items()}
        found = detect_flow(shapes)
        if found is None:
            found = detect(path, shapes, read_sidecar_yaml(path))
        return found.arch
    except (CheckpointError, ValueError, TypeError, OSError):
        return None


def _config(folder: Path, part: str, name: str = "config.json") -> dict[str, Any]:
    data = json.loads((folder / part / name).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / part / name} is not a JSON object")
    return data


def _folder_family(folder: Path) -> families.Family | None:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    if not isinstance(index, dict):
        return None
    pipeline = index.get("_class_name")
    if pipeline in FLOW_PIPELINES:  # the same tests as flow_components.load_flow_folder
        transformer = _config(folder, "transformer")
        if pipeline == "FluxPipeline":
            return families.family("flux-dev" if transformer.get("guidance_embeds") else "flux-schnell")
        return families.family("sd3.5" if transformer.get("qk_norm") else "sd3")

    def has(part: str) -> bool:
        entry = index.get(part)
        return isinstance(entry, list) and bool(entry) and entry[0] is not None

    te_act = _config(folder, "text_encoder").get("hidden_act") if has("text_encoder") else None
    in_channels = int(_config(folder, "unet").get("in_channels", 4))
    prediction = _config(folder, "scheduler", "scheduler_config.json").get("prediction_type", "epsilon")
    found = detect_folder(has("text_encoder"), has("text_encoder_2"), te_act, in_channels, str(prediction))
    return found.arch
