"""The ControlNet accordion (one unit) on the txt2img, img2img and Inpaint tabs, and its values.

The fields are named as sd-webui-controlnet's unit keys, so the values by name are a unit dict for
`units.parse_unit` (unit 0). API clients that send several units do so through `alwayson_scripts`
(read by `from_alwayson` into the hidden `_units` value), or `extension_args.controlnet._units`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import Field, RequestError, UiSection

from .images import ResizeMode
from .models import ControlNetFile
from .preprocess import AnnotatorUnavailable, module_names
from .preprocess import run as run_preprocessor
from .units import RESOLUTION_RANGE, ControlMode

UNIT_KEYS = (
    "enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
    "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b",
)  # fmt: skip


def unit_fields(models: Sequence[ControlNetFile]) -> tuple[Field, ...]:
    """The fields of one unit; the model choices are the files in models/ControlNet when loaded."""
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
    )  # fmt: skip


def section(models: Sequence[ControlNetFile], models_dir: Path) -> UiSection:
    def preview(values: Mapping[str, Any]) -> Image.Image:
        return preview_map(values, models_dir)

    return UiSection(("txt2img", "img2img"), "ControlNet", fields=unit_fields(models), preview=preview)


def preview_map(values: Mapping[str, Any], models_dir: Path | None = None) -> Image.Image:
    """The accordion's control image through its preprocessor (the Preview button)."""
    image = values.get("image")
    if image is None:
        raise RequestError("image", "drop a control image first")
    res = int(values.get("processor_res", -1))
    a, b = float(values.get("threshold_a", -1)), float(values.get("threshold_b", -1))
    try:
        return run_preprocessor(values.get("module", "none"), image, res, a, b, models_dir)
    except AnnotatorUnavailable as e:
        raise RequestError("module", str(e)) from e


def ui_unit(args: Mapping[str, Any]) -> dict[str, Any] | None:
    """The accordion's unit as a unit dict, or None when it is not enabled."""
    if not args.get("enabled"):
        return None
    return {k: args[k] for k in UNIT_KEYS if k in args}
