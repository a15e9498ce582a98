"""ControlNet units in infotext, in sd-webui-controlnet's format, and read back.

One key per enabled unit, named by the unit's index in the request:

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1, Resize Mode: Crop and
    Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1,
    Pixel Perfect: False, Control Mode: Balanced"

(one line; the core's infotext writer JSON-quotes the value since it holds commas and colons). Field
names are the unit keys with words capitalised (`threshold_a` -> `Threshold A`). Reading turns an entry
back into a unit dict for `units.parse_unit` (images are not recorded); fields the other extension adds
(`Hr Option`, `Save Detected Map`, ...) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .flow_layout import NO_UNION_TYPE
from .units import ControlUnit

FIELDS = (
    "module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
    "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "union_control_type",
)  # fmt: skip
KEY = re.compile(r"^ControlNet (\d+)$")


def display(field: str) -> str:
    """`threshold_a` -> `Threshold A`."""
    return " ".join(w.capitalize() for w in field.split("_"))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if hasattr(value, "value"):  # the enums: their label
        return str(value.value)
    return str(value)


def format_unit(unit: ControlUnit) -> str:
    """One unit's infotext value (unquoted)."""
    out = []
    for field in FIELDS:
        if field == "union_control_type" and unit.union_control_type == NO_UNION_TYPE:
            continue  # written for Flux Union units only
        text = _text(getattr(unit, field))
        if "," in text or ":" in text:  # the format has no quoting inside a unit
            raise ValueError(f"ControlNet unit {unit.index}: {field} {text!r} cannot be written to infotext")
        out.append(f"{display(field)}: {text}")
    return ", ".join(out)


def infotext_params(units: Sequence[ControlUnit]) -> dict[str, str]:
    """{"ControlNet <index>": value} for the units (for the image's infotext)."""
    return {f"ControlNet {u.index}": format_unit(u) for u in units}


def _value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_entry(text: str) -> dict[str, Any]:
    """One `ControlNet N` value -> a unit dict (with `enabled: true`); ValueError if malformed."""
    unit: dict[str, Any] = {"enabled": True}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep:
            raise ValueError(f"not a 'Key: value' pair: {item.strip()!r}")
        field = "_".join(w.lower() for w in key.split(" "))
        if field in FIELDS:
            unit[field] = value if field in ("module", "model", "union_control_type") else _value(value)
    return unit


def units_from_params(params: Mapping[str, str]) -> dict[int, dict[str, Any]]:
    """{index: unit dict} from parsed infotext parameters (`parse_infotext`'s result)."""
    out = {}
    for key, value in params.items():
        m = KEY.match(key)
        if m:
            out[int(m.group(1))] = parse_entry(value)
    return dict(sorted(out.items()))
