"""ControlNet units: sd-webui-controlnet's API unit dicts, checked once, as frozen ControlUnits.

    {"alwayson_scripts": {"controlnet": {"args": [unit, ...]}}}
    unit = {"enabled": true, "image": "<base64>" | {"image": ..., "mask": ...} | [image, mask],
            "mask": "<base64>", "module": "canny", "model": "control_v11p_sd15_canny [d14c016b]",
            "weight": 1, "resize_mode": 1 | "Crop and Resize", "processor_res": 512,
            "threshold_a": 100, "threshold_b": 200, "guidance_start": 0, "guidance_end": 1,
            "control_mode": 0 | "Balanced", "pixel_perfect": false}

As in that extension: a missing key takes its default, -1 for processor_res/threshold_a/threshold_b
means the module's default, unknown keys are ignored (clients send UI-only ones such as `low_vram`),
`input_image` and `guidance` are old names of `image` and `guidance_end`. Unlike it, `enabled`
defaults to true (a client that sends a unit wants it) and a value out of range is an error rather than
silently replaced. Every error names the unit's index and the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from PIL import Image

from webui.plugins.api import RequestError

from .clip_vision import is_ip_module
from .flow_layout import NO_UNION_TYPE, a_family, refusal, union_type, wired
from .images import ImageDataError, ResizeMode, decode_base64_image
from .models import ControlNetFile, find_model, foreign_family
from .preprocess import MODULES, canonical, module_names

MAX_UNITS = 8
RESOLUTION_RANGE = (64, 2048)


class ControlMode(StrEnum):
    """sd-webui-controlnet's control modes (API integers 0, 1, 2 in this order)."""

    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class UnitError(RequestError):
    """A bad unit field: `unit` is its index, `name` the field (`field` is `controlnet.args[i].name`)."""

    def __init__(self, unit: int, name: str, message: str) -> None:
        self.unit, self.name = unit, name
        super().__init__(f"controlnet.args[{unit}].{name}", f"ControlNet unit {unit}: {message}")


@dataclass(frozen=True)
class ControlUnit:
    index: int  # position in the request's unit list (infotext's `ControlNet <index>`)
    module: str
    model: str  # the model's title, `name [hash]` ("None": no model)
    weight: float = 1.0
    image: Image.Image | None = None  # None: use the job's init image
    mask: Image.Image | None = None  # "L"; white = masked
    resize_mode: ResizeMode = ResizeMode.CROP
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: ControlMode = ControlMode.BALANCED
    pixel_perfect: bool = False
    union_control_type: str = NO_UNION_TYPE  # Flux Union ControlNets: the control type (canny, depth...)

    def active_at(self, step: int, total: int) -> bool:
        """Whether the unit acts at `step` (from 0) of `total`: sd-webui-controlnet's rule, the fraction
        step/total within [guidance_start, guidance_end]."""
        done = step / total
        return self.weight != 0 and self.guidance_start <= done <= self.guidance_end


_ALIASES = {"input_image": "image", "guidance": "guidance_end", "mask_image": "mask"}
_RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": ResizeMode.CROP,
    "Scale to Fit (Inner Fit)": ResizeMode.CROP,
    "Outer Fit (Shrink to Fit)": ResizeMode.FILL,
    "Envelope (Outer Fit)": ResizeMode.FILL,
}


def _number(i: int, name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UnitError(i, name, f"{name} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise UnitError(i, name, f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)


def _flag(i: int, name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) and isinstance(value, int):
        return bool(value)
    raise UnitError(i, name, f"{name} must be true or false, got {value!r}")


def _enum(i: int, name: str, value: Any, enum: type[Enum], aliases: Mapping[str, Enum]) -> Any:
    members = list(enum)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(members):
        return members[value]
    if isinstance(value, str):
        for m in members:
            if value in (m.value, m.name):
                return m
        if value in aliases:
            return aliases[value]
    choices = ", ".join(f'{n} / "{m.value}"' for n, m in enumerate(members))
    raise UnitError(i, name, f"{name} must be one of {choices}; got {value!r}")


def _image(i: int, name: str, value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, str):
        raise UnitError(i, name, f"{name} must be a base64-encoded image, got {type(value).__name__}")
    try:
        return decode_base64_image(value)
    except ImageDataError as e:
        raise UnitError(i, name, f"{name} {e}") from e


def _images(i: int, d: Mapping[str, Any]) -> tuple[Image.Image | None, Image.Image | None]:
    """(image, mask) from the forms the API accepts."""
    image, mask = d.get("image"), d.get("mask")
    if isinstance(image, (list, tuple)):
        if len(image) != 2 or isinstance(image[0], dict):
            raise UnitError(i, "image", "image as a list must be [image, mask]")
        image, mask = image
    elif isinstance(image, dict):
        if "image" not in image:
            raise UnitError(i, "image", 'image as an object needs an "image" key')
        image, mask = image["image"], image.get("mask", mask)
    img = _image(i, "image", image) if image not in (None, "") else None
    msk = _image(i, "mask", mask) if mask not in (None, "") else None
    if msk is not None:
        if img is None:
            raise UnitError(i, "mask", "a mask needs an image")
        if msk.size != img.size:
            raise UnitError(
                i, "mask", f"mask is {msk.size[0]}x{msk.size[1]}, image {img.size[0]}x{img.size[1]}"
            )
        msk = msk.convert("L") if msk.mode != "RGBA" else msk.getchannel("A")
    return img, msk


def _threshold(i: int, name: str, value: Any, module: str) -> float:
    slider = getattr(MODULES[module], name) if module in MODULES else None
    if value == -1 or slider is None:
        return -1.0 if value == -1 else _number(i, name, value, -1e9, 1e9)
    return _number(i, name, value, slider.minimum, slider.maximum)


def parse_unit(i: int, d: Any, models: Sequence[ControlNetFile] | None = None) -> ControlUnit | None:
    """The checked unit, or None for a disabled one. With `models`, the model must be one of them."""
    if not isinstance(d, Mapping):
        raise UnitError(i, "unit", f"a unit must be an object, got {type(d).__name__}")
    d = dict(d)
    for old, new in _ALIASES.items():
        if old in d:
            if new in d:
                raise UnitError(i, old, f"give {new} or its old name {old}, not both")
            d[new] = d.pop(old)
    if not _flag(i, "enabled", d.get("enabled", True)):
        return None
    module = d.get("module", "none")
    if not isinstance(module, str) or canonical(module) not in module_names():
        raise UnitError(i, "module", f"unknown module {module!r}; choose one of {', '.join(module_names())}")
    module = canonical(module)
    model = d.get("model", "None")
    if not isinstance(model, str) or model in ("", "None"):
        raise UnitError(i, "model", "model is required (a file in models/ControlNet)")
    if models is not None:
        try:
            found = find_model(list(models), model)
        except KeyError:
            raise UnitError(i, "model", f"model {model!r} is not in models/ControlNet") from None
        foreign = foreign_family(found)
        if foreign is not None and not wired(foreign[1]):
            raise UnitError(i, "model", f"{found.name} is {refusal(*foreign)}")
        if foreign is not None and is_ip_module(module):
            raise UnitError(
                i, "module", f"{found.name} is {a_family(foreign[0])} ControlNet, not an IP-Adapter"
            )
        model = found.title
    else:
        foreign = None
    image, mask = _images(i, d)
    if mask is not None and is_ip_module(module):
        raise UnitError(i, "mask", "IP-Adapter units take no mask (the whole reference image is used)")
    res = d.get("processor_res", -1)
    if res != -1:
        res = int(_number(i, "processor_res", res, *RESOLUTION_RANGE))
        if res != d["processor_res"]:
            raise UnitError(
                i, "processor_res", f"processor_res must be a whole number, got {d['processor_res']}"
            )
    start = _number(i, "guidance_start", d.get("guidance_start", 0.0), 0, 1)
    end = _number(i, "guidance_end", d.get("guidance_end", 1.0), 0, 1)
    if start > end:
        raise UnitError(i, "guidance_start", f"guidance_start ({start:g}) is after guidance_end ({end:g})")
    control_mode = _enum(i, "control_mode", d.get("control_mode", 0), ControlMode, {})
    union = _union(i, d.get("union_control_type", NO_UNION_TYPE), foreign, known=models is not None)
    if foreign is not None and control_mode is not ControlMode.BALANCED:
        raise UnitError(
            i,
            "control_mode",
            f"{foreign[0]} ControlNets take the Balanced control mode only (their outputs are not "
            f"UNet skip connections to soften), got {control_mode.value!r}",
        )
    return ControlUnit(
        index=i,
        module=module,
        model=model,
        weight=_number(i, "weight", d.get("weight", 1.0), 0, 2),
        image=image,
        mask=mask,
        resize_mode=_enum(i, "resize_mode", d.get("resize_mode", 1), ResizeMode, _RESIZE_ALIASES),
        processor_res=int(res),
        threshold_a=_threshold(i, "threshold_a", d.get("threshold_a", -1), module),
        threshold_b=_threshold(i, "threshold_b", d.get("threshold_b", -1), module),
        guidance_start=start,
        guidance_end=end,
        control_mode=control_mode,
        pixel_perfect=_flag(i, "pixel_perfect", d.get("pixel_perfect", False)),
        union_control_type=union,
    )


def _union(i: int, value: Any, foreign: tuple[str, str] | None, known: bool) -> str:
    """The checked `union_control_type`: a Flux Union model needs one, other models take none (when the
    model is known)."""
    if not isinstance(value, str):
        raise UnitError(i, "union_control_type", f"union_control_type must be a name, got {value!r}")
    try:
        name = union_type(value)
    except ValueError as e:
        raise UnitError(i, "union_control_type", str(e)) from e
    if foreign is not None and "Union" in foreign[1] and name is None:
        raise UnitError(
            i, "union_control_type", "a Flux Union ControlNet needs union_control_type (canny, depth, ...)"
        )
    union = foreign is not None and "Union" in foreign[1]
    if known and not union and name is not None:
        raise UnitError(i, "union_control_type", "only Flux Union ControlNets take a union_control_type")
    return NO_UNION_TYPE if name is None else name


def parse_units(args: Any, models: Sequence[ControlNetFile] | None = None) -> list[ControlUnit]:
    """The enabled units of `alwayson_scripts.controlnet.args` (a list of unit dicts)."""
    if not isinstance(args, (list, tuple)):
        raise RequestError("controlnet.args", f"must be a list of units, got {type(args).__name__}")
    if len(args) > MAX_UNITS:
        raise RequestError("controlnet.args", f"at most {MAX_UNITS} ControlNet units, got {len(args)}")
    units = [parse_unit(i, d, models) for i, d in enumerate(args)]
    return [u for u in units if u is not None]


def stored(unit: ControlUnit) -> dict[str, Any]:
    """The unit as plain values (images stay PIL images): what the job store keeps and `parse_unit`
    reads back unchanged (`index` keeps the unit's position in the client's list)."""
    out: dict[str, Any] = {
        "index": unit.index,
        "module": unit.module,
        "model": unit.model,
        "weight": unit.weight,
        "resize_mode": unit.resize_mode.value,
        "processor_res": unit.processor_res,
        "threshold_a": unit.threshold_a,
        "threshold_b": unit.threshold_b,
        "guidance_start": unit.guidance_start,
        "guidance_end": unit.guidance_end,
        "control_mode": unit.control_mode.value,
        "pixel_perfect": unit.pixel_perfect,
        "union_control_type": unit.union_control_type,
    }
    if unit.image is not None:
        out["image"] = unit.image
    if unit.mask is not None:
        out["mask"] = unit.mask
    return out


def from_stored(values: Any, models: Sequence[ControlNetFile] | None = None) -> list[ControlUnit]:
    """The units `stored` wrote (checked again: a model may have gone since)."""
    if not isinstance(values, (list, tuple)):
        raise RequestError("controlnet._units", f"must be a list of units, got {type(values).__name__}")
    if len(values) > MAX_UNITS:
        raise RequestError("controlnet._units", f"at most {MAX_UNITS} ControlNet units, got {len(values)}")
    out = []
    for i, d in enumerate(values):
        index = d.get("index", i) if isinstance(d, Mapping) else i
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 100:
            raise UnitError(i, "index", f"index must be a whole number from 0 to 99, got {index!r}")
        unit = parse_unit(index, d, models)
        if unit is not None:
            out.append(unit)
    return out
