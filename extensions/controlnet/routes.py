"""sd-webui-controlnet's REST routes, as plain functions from request values to response bodies.

    GET  /controlnet/version                     -> {"version": 2}
    GET  /controlnet/model_list?update=true      -> {"model_list": ["name [hash]", ...],
                                                     "model_family": {"name [hash]": "Flux (XLabs)"}}
    GET  /controlnet/module_list?alias_names=... -> {"module_list": [...], "module_detail": {name: {...}}}
    POST /controlnet/detect                      -> {"images": ["<base64 PNG>", ...], "info": "Success"}
                                                    (+ "poses": [pose JSON per image] for openpose)

Mounting them (under the auth middleware) waits for plugin API 2's routes; bad values raise
RequestError naming the body field (the API answers 422 with it).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import RequestError

from .annotator_files import Nets
from .depth_anything import FILES as DEPTH_ANYTHING_FILES
from .hed import MODULES as HED_MODULES
from .images import ImageDataError, decode_base64_image
from .lineart import FILES as LINEART_FILES
from .lineart_anime import FILES as ANIME_FILES
from .midas import MODULES as MIDAS_MODULES
from .models import foreign_family, list_models
from .openpose import FILES as POSE_FILES
from .openpose import INFO_KEY as POSE_KEY
from .pidinet import MODULES as PIDINET_MODULES
from .preprocess import ALIASES, MLSD_SLIDERS, MODULES, NORMAL_BG, AnnotatorUnavailable, Slider, module_names
from .preprocess import run as run_preprocessor
from .units import RESOLUTION_RANGE

API_VERSION = 2
MAX_DETECT_IMAGES = 16
# the annotators that run from a weights file (preprocess.py)
RUN_FROM_FILES = {
    *LINEART_FILES,
    *ANIME_FILES,
    *POSE_FILES,
    *DEPTH_ANYTHING_FILES,
    *MIDAS_MODULES,
    *HED_MODULES,
    *PIDINET_MODULES,
    "mlsd",
}
_LABELS = {name: alias for alias, name in ALIASES.items() if name in MODULES}  # UI labels of some modules


def version() -> dict[str, Any]:
    return {"version": API_VERSION}


def model_list(models_dir: Path) -> dict[str, Any]:
    """Every ControlNet (and T2I-Adapter) title, read from disk now (the `update` flag is moot), and
    under `model_family` the family of those that are not for SD 1.x / SDXL (SD3, Flux: their units run
    with SD3 / Flux checkpoints; the kinds not wired are refused when a unit names them)."""
    models = list_models(models_dir)
    families = {m.title: f"{f[0]} ({f[1]})" for m in models if (f := foreign_family(m)) is not None}
    return {"model_list": [m.title for m in models], "model_family": families}


def _slider(s: Slider) -> dict[str, Any]:
    return {"name": s.label, "value": s.default, "min": s.minimum, "max": s.maximum}


def module_list(alias_names: bool = False) -> dict[str, Any]:
    """The modules units may name, with their sliders (resolution, threshold A, threshold B)."""
    names = module_names()
    detail: dict[str, Any] = {}
    for name in names:
        module = MODULES.get(name)
        sliders = []
        if name in RUN_FROM_FILES:  # runs from a weights file, at a resolution like the built-in ones
            lo, hi = RESOLUTION_RANGE
            sliders.append({"name": "Preprocessor Resolution", "value": 512, "min": lo, "max": hi})
        if name == "normal_midas":
            sliders.append(_slider(NORMAL_BG))
        if name == "mlsd":
            sliders += [_slider(s) for s in MLSD_SLIDERS]
        if module is not None and module.resolution is not None:
            lo, hi = RESOLUTION_RANGE
            sliders.append(
                {"name": "Preprocessor Resolution", "value": module.resolution, "min": lo, "max": hi}
            )
        if module is not None:
            sliders += [_slider(s) for s in (module.threshold_a, module.threshold_b) if s is not None]
        detail[_LABELS.get(name, name) if alias_names else name] = {
            "model_free": name in MODULES,
            "sliders": sliders,
        }
    return {"module_list": list(detail), "module_detail": detail}


def _encode(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _number(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key, -1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(key, f"must be a number, got {value!r}")
    return float(value)


def detect(
    body: Mapping[str, Any], models_dir: Path | None = None, nets: Nets | None = None
) -> dict[str, Any]:
    """Run a preprocessor on the body's images (and masks) and return the maps; its networks through
    `nets` (the extension's: cached, on the device of its models)."""
    module = body.get("controlnet_module", "none")
    canonical = ALIASES.get(module, module) if isinstance(module, str) else module
    if not isinstance(module, str) or canonical not in module_names():
        raise RequestError("controlnet_module", f"unknown module {module!r}")
    images = body.get("controlnet_input_images", [])
    masks = body.get("controlnet_masks", [])
    if not isinstance(images, list) or not images:
        raise RequestError("controlnet_input_images", "give at least one base64-encoded image")
    if len(images) > MAX_DETECT_IMAGES:
        raise RequestError(
            "controlnet_input_images", f"at most {MAX_DETECT_IMAGES} images, got {len(images)}"
        )
    if not isinstance(masks, list):
        raise RequestError("controlnet_masks", "must be a list of base64-encoded images")
    res = int(_number(body, "controlnet_processor_res"))
    if res != -1 and not RESOLUTION_RANGE[0] <= res <= RESOLUTION_RANGE[1]:
        raise RequestError(
            "controlnet_processor_res", f"must be between {RESOLUTION_RANGE[0]} and {RESOLUTION_RANGE[1]}"
        )
    a, b = _number(body, "controlnet_threshold_a"), _number(body, "controlnet_threshold_b")
    out, poses = [], []
    for i, data in enumerate(images):
        image = _decode(data, f"controlnet_input_images[{i}]")
        if i < len(masks):
            mask = _decode(masks[i], f"controlnet_masks[{i}]")
            if mask.size != image.size:
                raise RequestError(f"controlnet_masks[{i}]", "mask and image sizes differ")
            image = image.convert("RGB")
            image.putalpha(mask.convert("L"))
        try:
            result = run_preprocessor(canonical, image, res, a, b, models_dir, nets)
        except AnnotatorUnavailable as e:
            raise RequestError("controlnet_module", str(e)) from e
        out.append(_encode(result))
        if canonical in POSE_FILES:
            poses.append(result.info[POSE_KEY])
    return {"images": out, "info": "Success", **({"poses": poses} if poses else {})}


def _decode(data: Any, field: str) -> Image.Image:
    if not isinstance(data, str):
        raise RequestError(field, "must be a base64-encoded image")
    try:
        return decode_base64_image(data)
    except ImageDataError as e:
        raise RequestError(field, str(e)) from e
