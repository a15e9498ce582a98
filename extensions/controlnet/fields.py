"""The ControlNet accordion on the txt2img, img2img and Inpaint tabs: one tab per unit, and their values.

As sd-webui-controlnet, the accordion has "ControlNet Unit 0", "ControlNet Unit 1", ... tabs, as many as
the `unit_count` setting says (3 by default; read when the app starts). Unit 0's fields are named as that
extension's unit keys (`enabled`, `image`, `module`, ...: what clients of the accordion's API already
send); unit i's are the same keys prefixed `unit<i>_`. The values by name become unit dicts for
`units.parse_unit`, each with its unit's index. API clients may instead send the list of units through
`alwayson_scripts` (read by `from_alwayson` into the hidden `_units` value), or
`extension_args.controlnet._units`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import Field, RequestError, UiSection

from .annotator_files import Nets
from .flow_layout import NO_UNION_TYPE, UNION_TYPES
from .images import ResizeMode
from .models import ControlNetFile
from .preprocess import AnnotatorUnavailable, module_names
from .preprocess import run as run_preprocessor
from .units import MAX_UNITS, RESOLUTION_RANGE, ControlMode

UNIT_KEYS = (
    "enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
    "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b", "union_control_type",
)  # fmt: skip


UNIT_COUNT = 3  # sd-webui-controlnet's default number of units in the UI
PREFIX = re.compile(r"^unit(\d+)_(.+)$")


def field_name(unit: int, key: str) -> str:
    """The accordion's field for `key` of unit `unit`: `key` for unit 0, else `unit<i>_key`."""
    return key if unit == 0 else f"unit{unit}_{key}"


def count_setting() -> Field:
    label = "Multi-ControlNet: number of units in the UI (applies at restart)"
    return Field("unit_count", "slider", UNIT_COUNT, label=label, minimum=1, maximum=MAX_UNITS, step=1)


def unit_count(settings: Mapping[str, Any]) -> int:
    """The stored `unit_count` (unchecked when register reads it), or the default when unusable."""
    try:
        return int(
            count_setting().coerce(settings.get("unit_count", UNIT_COUNT), "unit_count", error=ValueError)
        )
    except ValueError:
        return UNIT_COUNT


def unit_fields(models: Sequence[ControlNetFile], unit: int = 0, group: str = "") -> tuple[Field, ...]:
    """The fields of one unit; the model choices are the files in models/ControlNet when loaded."""
    fields = _unit_fields(models)
    return tuple(replace(f, name=field_name(unit, f.name), group=group) for f in fields)


def _unit_fields(models: Sequence[ControlNetFile]) -> tuple[Field, ...]:
    return (
        Field("enabled", "checkbox", False, label="Enable"),
        Field("image", "image", None, label="Control image (empty: the img2img input image)"),
        Field("module", "dropdown", "canny", label="Preprocessor", choices=tuple(module_names())),
        Field("model", "dropdown", "None", label="Model", choices=("None", *(m.title for m in models))),
        Field("weight", "slider", 1.0, label="Control weight", minimum=0.0, maximum=2.0, step=0.05),
        Field("guidance_start", "slider", 0.0, label="Starting control step", minimum=0.0, maximum=1.0),
        Field("guidance_end", "slider", 1.0, label="Ending control step", minimum=0.0, maximum=1.0),
        Field("control_mode", "radio", ControlMode.BALANCED.value, label="Control mode",
              choices=tuple(m.value for m in ControlMode)),
        Field("resize_mode", "radio", ResizeMode.CROP.value, label="Resize mode",
              choices=tuple(m.value for m in ResizeMode)),
        Field("pixel_perfect", "checkbox", False, label="Pixel perfect"),
        Field("processor_res", "number", -1, label="Preprocessor resolution (-1: the preprocessor's)",
              minimum=-1, maximum=RESOLUTION_RANGE[1], step=1),
        Field("threshold_a", "number", -1, label="Threshold A (-1: default)", minimum=-1),
        Field("threshold_b", "number", -1, label="Threshold B (-1: default)", minimum=-1),
        Field("union_control_type", "dropdown", NO_UNION_TYPE, label="Control type (Flux Union ControlNets)",
              choices=(NO_UNION_TYPE, *UNION_TYPES)),
    )  # fmt: skip


def section(
    models: Sequence[ControlNetFile], models_dir: Path, count: int = UNIT_COUNT, nets: Nets | None = None
) -> UiSection:
    """The accordion with `count` unit tabs (no tabs for a single unit); its Preview button runs
    annotator networks through `nets`."""

    def preview(values: Mapping[str, Any]) -> Image.Image:
        return preview_map(shown_unit(values), models_dir, nets)

    fields: tuple[Field, ...] = ()
    for i in range(count):
        fields += unit_fields(models, i, f"ControlNet Unit {i}" if count > 1 else "")
    return UiSection(("txt2img", "img2img"), "ControlNet", fields=fields, preview=preview)


def by_unit(values: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The accordion's values split by unit: {index: {unit key: value}}."""
    out: dict[int, dict[str, Any]] = {}
    for name, value in values.items():
        m = PREFIX.match(name)
        unit, key = (int(m.group(1)), m.group(2)) if m else (0, name)
        if key in UNIT_KEYS:
            out.setdefault(unit, {})[key] = value
    return dict(sorted(out.items()))


def shown_unit(values: Mapping[str, Any]) -> dict[str, Any]:
    """The unit a Preview button shows: the one whose fields it sent (the first with an image when
    given several)."""
    units = by_unit(values)
    if not units:
        return {}
    with_image = [u for u in units.values() if u.get("image") is not None]
    return with_image[0] if with_image else next(iter(units.values()))


def preview_map(
    values: Mapping[str, Any], models_dir: Path | None = None, nets: Nets | None = None
) -> Image.Image:
    """The accordion's control image through its preprocessor (the Preview button)."""
    image = values.get("image")
    if image is None:
        raise RequestError("image", "drop a control image first")
    res = int(values.get("processor_res", -1))
    a, b = float(values.get("threshold_a", -1)), float(values.get("threshold_b", -1))
    try:
        return run_preprocessor(values.get("module", "none"), image, res, a, b, models_dir, nets)
    except AnnotatorUnavailable as e:
        raise RequestError("module", str(e)) from e


def ui_units(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The accordion's enabled units as unit dicts, each with its `index`."""
    return [{**unit, "index": i} for i, unit in by_unit(args).items() if unit.get("enabled")]


def infotext_values(units: Mapping[int, Mapping[str, Any]], count: int) -> dict[str, Any]:
    """Accordion values for an infotext's `ControlNet N` units: unit N's tab (N < count) gets them, the
    other tabs are switched off, as A1111 pastes them."""
    out: dict[str, Any] = {field_name(i, "enabled"): False for i in range(count)}
    for i, unit in units.items():
        if i < count:
            out.update({field_name(i, k): v for k, v in unit.items() if k in UNIT_KEYS})
    return out
