"""ADetailer's infotext keys, written for the active units and read back.

The first unit's keys are plain (`ADetailer model: face_yolov8n.pt`); later units add the unit's
ordinal (`ADetailer model 2nd`, `ADetailer confidence 3rd`); `ADetailer version` is written once.
As ADetailer does, a key at its default that says nothing is left out (empty prompts, offsets of 0,
"None" merge mode), a value whose `use separate ...` switch is off is left out with the switch, and
`ADetailer inpaint padding` only appears with `ADetailer inpaint only masked: True`. Reading back, a
missing key therefore means the default, and the result is a unit object for `units.parse_unit`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .units import FIELDS, SAME_SCHEDULER, DetailerArgs, DetailerUnit, ordinal

VERSION = "sfumato-detailer 0.1.0"
VERSION_KEY = "ADetailer version"
NAMES = {  # field -> ADetailer's infotext name
    "model": "model", "model_classes": "model classes", "prompt": "prompt",
    "negative_prompt": "negative prompt", "confidence": "confidence",
    "mask_k_largest": "mask only top k largest", "mask_min_ratio": "mask min ratio",
    "mask_max_ratio": "mask max ratio", "x_offset": "x offset", "y_offset": "y offset",
    "dilate_erode": "dilate erode", "mask_merge_invert": "mask merge invert", "mask_blur": "mask blur",
    "denoising_strength": "denoising strength", "inpaint_only_masked": "inpaint only masked",
    "inpaint_only_masked_padding": "inpaint padding",
    "use_inpaint_width_height": "use inpaint width height", "inpaint_width": "inpaint width",
    "inpaint_height": "inpaint height", "use_steps": "use separate steps", "steps": "steps",
    "use_cfg_scale": "use separate CFG scale", "cfg_scale": "CFG scale",
    "use_checkpoint": "use separate checkpoint", "checkpoint": "checkpoint",
    "use_vae": "use separate VAE", "vae": "VAE", "use_sampler": "use separate sampler",
    "sampler": "sampler", "scheduler": "scheduler",
    "use_noise_multiplier": "use separate noise multiplier", "noise_multiplier": "noise multiplier",
    "use_clip_skip": "use separate CLIP skip", "clip_skip": "CLIP skip", "restore_face": "restore face",
    "controlnet_model": "ControlNet model", "controlnet_module": "ControlNet module",
    "controlnet_weight": "ControlNet weight", "controlnet_guidance_start": "ControlNet guidance start",
    "controlnet_guidance_end": "ControlNet guidance end",
}  # fmt: skip
SWITCHES = {  # a `use ...` switch and the values it governs
    "use_inpaint_width_height": ("inpaint_width", "inpaint_height"),
    "use_steps": ("steps",), "use_cfg_scale": ("cfg_scale",), "use_checkpoint": ("checkpoint",),
    "use_vae": ("vae",), "use_sampler": ("sampler", "scheduler"),
    "use_noise_multiplier": ("noise_multiplier",), "use_clip_skip": ("clip_skip",),
}  # fmt: skip
_QUIET_DEFAULTS = (
    "model_classes", "prompt", "negative_prompt", "mask_k_largest", "mask_min_ratio", "mask_max_ratio",
    "x_offset", "y_offset", "mask_merge_invert", "restore_face", "controlnet_module", "controlnet_weight",
    "controlnet_guidance_start", "controlnet_guidance_end",
)  # fmt: skip
_DEFAULTS = DetailerUnit()
_KEY = re.compile(r"^ADetailer (.+?)(?: (\d+)(?:st|nd|rd|th))?$")


def suffix(index: int) -> str:
    """ "" for the first unit, " 2nd" for the second, ..."""
    return "" if index == 0 else f" {ordinal(index + 1)}"


def unit_params(unit: DetailerUnit) -> dict[str, Any]:
    """One active unit's keys (with its suffix) and values."""
    values = {name: getattr(unit, name) for name in NAMES}
    drop = {n for n in _QUIET_DEFAULTS if values[n] == getattr(_DEFAULTS, n)}
    for switch, governed in SWITCHES.items():
        if not values[switch]:
            drop |= {switch, *governed}
    if values["scheduler"] == SAME_SCHEDULER:
        drop.add("scheduler")
    if not unit.inpaint_only_masked:
        drop.add("inpaint_only_masked_padding")
    if unit.controlnet_model == "None":
        drop |= {n for n in NAMES if n.startswith("controlnet_")}
    end = suffix(unit.index)
    out = {}
    for name, value in values.items():
        if name not in drop and value is not None:
            out[f"ADetailer {NAMES[name]}{end}"] = value.value if hasattr(value, "value") else value
    return out


def infotext_params(args: DetailerArgs) -> dict[str, Any]:
    """The image's ADetailer keys: every active unit's, then the version (nothing when none is active)."""
    out: dict[str, Any] = {}
    for unit in args.active_units:
        out.update(unit_params(unit))
    if out:
        out[VERSION_KEY] = VERSION
    return out


_BY_NAME = {text: name for name, text in NAMES.items()}


def _value(name: str, text: str) -> Any:
    kind = str(FIELDS[name].type)
    if kind == "bool":
        return {"True": True, "False": False}.get(text, text)
    if kind in ("int", "float"):
        try:
            number = float(text)
        except ValueError:
            return text  # parse_unit names the field
        return int(number) if kind == "int" and number.is_integer() else number
    return text


def units_from_params(params: Mapping[str, str]) -> dict[int, dict[str, Any]]:
    """{unit index: unit object (`ad_*` keys)} from parsed infotext (`parse_infotext`'s result).
    Keys this build does not know are ignored (a newer ADetailer may add some)."""
    units: dict[int, dict[str, Any]] = {}
    for key, text in params.items():
        m = _KEY.match(key)
        if not m or m.group(1) not in _BY_NAME:
            continue
        index = int(m.group(2)) - 1 if m.group(2) else 0
        name = _BY_NAME[m.group(1)]
        units.setdefault(index, {})[f"ad_{name}"] = _value(name, text)
    return {i: units[i] for i in sorted(units) if "ad_model" in units[i]}


def args_from_params(params: Mapping[str, str]) -> list[Any] | None:
    """ADetailer's API `args` for the infotext's units (a unit missing in between is "None"), or None
    when the infotext has no ADetailer keys: what "send to txt2img" and PNG Info give back."""
    units = units_from_params(params)
    if not units:
        return None
    return [True, False, *(units.get(i, {"ad_model": "None"}) for i in range(max(units) + 1))]
