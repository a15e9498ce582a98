"""ADetailer's API arguments, checked once, as frozen DetailerUnits.

    {"alwayson_scripts": {"ADetailer": {"args": [enable, skip_img2img, {"ad_model": ..., ...}, ...]}}}

As ADetailer reads them: a leading bool is `enable` (default true), a second bool `skip_img2img`
(default false), and each following object is one unit ("1st", "2nd", ...); `[{...}]` and
`[true, {...}]` are the short forms. A missing key takes ADetailer's default; an unknown key is an
error (ADetailer forbids them too); `is_api` is ignored. A unit whose `ad_model` is "None" or whose
`ad_tap_enable` is false does nothing. Unlike ADetailer, a bad value is an error naming the unit and
field, never silently replaced. Fields this build cannot honour yet (`ad_restore_face`,
`ad_model_classes`) are refused rather than ignored. A ControlNet model (`ad_controlnet_model`, a file
in models/ControlNet) goes with each region's inpaint pass as a ControlNet unit (detail.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webui.plugins.api import RequestError, UnknownSampler, resolve_sampler

from .masks import MergeInvert

MAX_UNITS = 10  # ADetailer's "max models" setting tops out at 10
SIZE_RANGE = (64, 2048)
SAME_SCHEDULER = "Use same scheduler"


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class UnitError(RequestError):
    """A bad unit field; `field` is `ADetailer.args[i].key` (i: the position in `args`)."""

    def __init__(self, position: int, unit: int, key: str, message: str) -> None:
        self.unit, self.key = unit, key
        super().__init__(
            f"ADetailer.args[{position}].{key}", f"ADetailer {ordinal(unit + 1)} unit: {message}"
        )


@dataclass(frozen=True)
class DetailerUnit:
    """One ADetailer unit (`ad_` keys without the prefix); `index` counts units from 0."""

    index: int = 0
    model: str = "None"
    model_classes: str = ""
    tap_enable: bool = True
    prompt: str = ""
    negative_prompt: str = ""
    confidence: float = 0.3
    mask_k_largest: int = 0
    mask_min_ratio: float = 0.0
    mask_max_ratio: float = 1.0
    dilate_erode: int = 4
    x_offset: int = 0
    y_offset: int = 0
    mask_merge_invert: MergeInvert = MergeInvert.NONE
    mask_blur: int = 4
    denoising_strength: float = 0.4
    inpaint_only_masked: bool = True
    inpaint_only_masked_padding: int = 32
    use_inpaint_width_height: bool = False
    inpaint_width: int = 512
    inpaint_height: int = 512
    use_steps: bool = False
    steps: int = 28
    use_cfg_scale: bool = False
    cfg_scale: float = 7.0
    use_checkpoint: bool = False
    checkpoint: str | None = None
    use_vae: bool = False
    vae: str | None = None
    use_sampler: bool = False
    sampler: str = "DPM++ 2M Karras"
    scheduler: str = SAME_SCHEDULER
    use_noise_multiplier: bool = False
    noise_multiplier: float = 1.0
    use_clip_skip: bool = False
    clip_skip: int = 1
    restore_face: bool = False
    controlnet_model: str = "None"
    controlnet_module: str = "None"
    controlnet_weight: float = 1.0
    controlnet_guidance_start: float = 0.0
    controlnet_guidance_end: float = 1.0

    @property
    def active(self) -> bool:
        return self.model != "None" and self.tap_enable


@dataclass(frozen=True)
class DetailerArgs:
    enabled: bool = True
    skip_img2img: bool = False
    units: tuple[DetailerUnit, ...] = ()

    @property
    def active_units(self) -> tuple[DetailerUnit, ...]:
        return tuple(u for u in self.units if u.active) if self.enabled else ()


FIELDS = {f.name: f for f in dataclasses.fields(DetailerUnit) if f.name != "index"}
KEYS = tuple(f"ad_{name}" for name in FIELDS)
RANGES: dict[str, tuple[float, float]] = {
    "confidence": (0, 1),
    "mask_k_largest": (0, 1000),
    "mask_min_ratio": (0, 1),
    "mask_max_ratio": (0, 1),
    "dilate_erode": (-256, 256),
    "x_offset": (-4096, 4096),
    "y_offset": (-4096, 4096),
    "mask_blur": (0, 256),  # the core's limit
    "denoising_strength": (0, 1),
    "inpaint_only_masked_padding": (0, 256),
    "inpaint_width": SIZE_RANGE,
    "inpaint_height": SIZE_RANGE,
    "steps": (1, 150),
    "cfg_scale": (0, 30),
    "noise_multiplier": (0.5, 1.5),
    "clip_skip": (1, 12),
    "controlnet_weight": (0, 1),
    "controlnet_guidance_start": (0, 1),
    "controlnet_guidance_end": (0, 1),
}


def _value(fail: Any, name: str, kind: str, value: Any) -> Any:
    key = f"ad_{name}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise fail(key, f"{key} must be true or false, got {value!r}")
    if kind in ("str", "str | None"):
        if value is None and kind == "str | None":
            return None
        if isinstance(value, str):
            return value
        raise fail(key, f"{key} must be a string, got {type(value).__name__}")
    if kind == "MergeInvert":
        try:
            return MergeInvert(value)
        except ValueError:
            choices = ", ".join(f'"{m.value}"' for m in MergeInvert)
            raise fail(key, f"{key} must be one of {choices}; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise fail(key, f"{key} must be a number, got {value!r}")
    if kind == "int" and value != int(value):
        raise fail(key, f"{key} must be a whole number, got {value!r}")
    lo, hi = RANGES.get(name, (-float("inf"), float("inf")))
    if not lo <= value <= hi:
        raise fail(key, f"{key} must be between {lo:g} and {hi:g}, got {value:g}")
    return int(value) if kind == "int" else float(value)


def parse_unit(
    unit: int,
    d: Any,
    *,
    position: int | None = None,
    models: Iterable[str] | None = None,
    controlnets: Iterable[str] | None = None,
) -> DetailerUnit:
    """One unit object (`ad_*` keys). With `models`, `ad_model` must be "None" or one of them; with
    `controlnets` (the ControlNet names in models/ControlNet), `ad_controlnet_model` likewise."""
    pos = unit if position is None else position

    def fail(key: str, message: str) -> UnitError:
        return UnitError(pos, unit, key, message)

    if not isinstance(d, Mapping):
        raise fail("unit", f"a unit must be an object, got {type(d).__name__}")
    values: dict[str, Any] = {}
    for key, value in d.items():
        if key == "is_api":
            continue
        name = key[3:] if isinstance(key, str) and key.startswith("ad_") else None
        if name not in FIELDS:
            raise fail(str(key), f"unknown field {key!r}")
        values[name] = _value(fail, name, str(FIELDS[name].type), value)
    u = DetailerUnit(index=unit, **values)
    if models is not None and u.model != "None" and u.model not in set(models):
        raise fail("ad_model", f"unknown detection model {u.model!r}; available: {', '.join(models)}")
    if u.mask_min_ratio > u.mask_max_ratio:
        raise fail(
            "ad_mask_min_ratio", f"ad_mask_min_ratio ({u.mask_min_ratio:g}) is above ad_mask_max_ratio"
        )
    for name in ("inpaint_width", "inpaint_height"):
        if getattr(u, name) % 8:
            raise fail(f"ad_{name}", f"ad_{name} must be a multiple of 8, got {getattr(u, name)}")
    if u.controlnet_guidance_start > u.controlnet_guidance_end:
        raise fail(
            "ad_controlnet_guidance_start", "ad_controlnet_guidance_start is after ad_controlnet_guidance_end"
        )
    if u.use_sampler:
        try:
            resolve_sampler(u.sampler, None if u.scheduler == SAME_SCHEDULER else u.scheduler)
        except UnknownSampler as e:
            key = "ad_scheduler" if getattr(e, "field", "") == "scheduler" else "ad_sampler"
            raise fail(key, str(e)) from None
    if u.restore_face:
        raise fail("ad_restore_face", "face restoration is not available yet; send ad_restore_face: false")
    if u.model_classes.strip():
        raise fail("ad_model_classes", "ad_model_classes is for YOLO-World models, which are not supported")
    if u.controlnet_model not in ("None", "") and controlnets is not None:
        names = set(controlnets)
        if controlnet_name(u.controlnet_model) not in names:
            available = ", ".join(sorted(names)) or "none in models/ControlNet"
            raise fail(
                "ad_controlnet_model",
                f"unknown ControlNet model {u.controlnet_model!r}; available: {available}",
            )
    if u.controlnet_model not in ("None", "") and not u.controlnet_module.strip():
        raise fail("ad_controlnet_module", 'ad_controlnet_module must name a preprocessor, or "None"')
    return u


def controlnet_name(model: str) -> str:
    """A ControlNet title (`name [hash]`, as sd-webui-controlnet lists it) or name -> the name."""
    model = model.strip()
    if model.endswith("]") and " [" in model:
        return model[: model.rindex(" [")]
    return model


# ADetailer's preprocessor for each kind of ControlNet when ad_controlnet_module is "None"
_DEFAULT_MODULES = (
    ("inpaint", "inpaint_only"), ("lineart", "lineart_coarse"), ("openpose", "openpose_full"),
    ("tile", "tile_resample"), ("depth", "depth_midas"), ("canny", "canny"), ("scribble", "scribble_xdog"),
)  # fmt: skip


def controlnet_module(unit: DetailerUnit) -> str:
    """The unit's preprocessor: its own, or for "None" the one ADetailer picks from the model's name
    (an inpaint ControlNet gets the inpaint preprocessor, a line-art one lineart_coarse, ...; "none"
    when the name says nothing)."""
    if unit.controlnet_module not in ("None", ""):
        return unit.controlnet_module
    name = controlnet_name(unit.controlnet_model).lower()
    return next((module for kind, module in _DEFAULT_MODULES if kind in name), "none")


def parse_args(
    args: Any, models: Iterable[str] | None = None, controlnets: Iterable[str] | None = None
) -> DetailerArgs:
    """`alwayson_scripts.ADetailer.args` -> DetailerArgs."""
    if not isinstance(args, (list, tuple)):
        raise RequestError("ADetailer.args", f"must be a list, got {type(args).__name__}")
    models = None if models is None else list(models)
    controlnets = None if controlnets is None else list(controlnets)
    flags: list[bool] = []
    units: list[DetailerUnit] = []
    for pos, item in enumerate(args):
        if isinstance(item, bool) and not units and len(flags) < 2:
            flags.append(item)
        elif isinstance(item, Mapping):
            units.append(parse_unit(len(units), item, position=pos, models=models, controlnets=controlnets))
        else:
            raise RequestError(
                f"ADetailer.args[{pos}]",
                "expected [enable, skip_img2img, unit, ...]: two leading true/false flags at most, then "
                f"unit objects; got {type(item).__name__}",
            )
    if not units:
        raise RequestError("ADetailer.args", 'no unit: add an object such as {"ad_model": "opencv_face"}')
    if len(units) > MAX_UNITS:
        raise RequestError("ADetailer.args", f"at most {MAX_UNITS} units, got {len(units)}")
    enabled = flags[0] if flags else True
    skip = flags[1] if len(flags) > 1 else False
    return DetailerArgs(enabled, skip, tuple(units))
