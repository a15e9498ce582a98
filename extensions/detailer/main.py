"""The detailer (ADetailer-compatible), wired to the plugin API: fields, A1111 args, hooks, routes.

The modules it uses:

- detectors.py  built-in OpenCV Haar detectors and YOLOv8 `.onnx` files in models/adetailer (cv2.dnn)
- yolo.py       YOLOv8 output decoding: letterbox, boxes, confidence, class, NMS
- masks.py      ADetailer's mask steps: area ratio, top-k, offset, dilate/erode, merge/invert
- units.py      ADetailer's `alwayson_scripts.ADetailer.args` -> frozen DetailerUnit (errors name field)
- infotext.py   `ADetailer model`, `ADetailer confidence`, ... (` 2nd`, ` 3rd` for later units) and back
- detail.py     the detail pass: one "only masked" inpaint per region through a run-img2img callable

Two ways in. The "Detailer" accordion (txt2img, img2img) has one unit's main fields, named by
ADetailer's keys (`ad_model`, ...) plus `enable`. An A1111 client's
`alwayson_scripts: {"ADetailer": {"args": [enable, skip_img2img, {unit}, ...]}}` is checked whole by
`from_alwayson` (a bad value is a 422 naming `alwayson_scripts.ADetailer.args[i].<key>` and the unit)
and kept as sent under `_adetailer`, which then wins over the fields. After decode, each image is
detailed with its own prompt, negative prompt, seed and subseed (ADetailer: seed + region index)
through the job's sub-pass runner; every image of the request gets the active units' infotext keys.
With the "Save images before ADetailer" setting, the picture as decoded is saved next to each detailed
one (same folder, same infotext less the ADetailer keys).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from webui.plugins.api import (
    Field,
    RequestError,
    RouteSpec,
    SettingsSection,
    UiSection,
    format_infotext,
    hookimpl,
    parse_infotext,
    save_image,
)

from . import detail, detectors, infotext, units

CONTROLNET_FOLDER = "ControlNet"
OWN_ARGS = "_adetailer"  # the A1111 args as sent (already checked), when the request came that way
_before = threading.local()  # per job thread: the batch's pictures as decoded, waiting for after_save


def model_folder(context: Any) -> Path:
    """<data>/models/adetailer, where YOLOv8 .onnx detection models go."""
    return Path(context.models_dir) / detectors.MODEL_FOLDER


def model_names(context: Any) -> list[str]:
    """What `ad_model` may name: the built-in detectors, the folder's .onnx files, and the .pt name of
    each (clients send ADetailer's `face_yolov8n.pt`; its exported `face_yolov8n.onnx` serves it)."""
    names = detectors.detector_names([model_folder(context)])
    return [*names, *(f"{Path(n).stem}.pt" for n in names if n.endswith(".onnx"))]


def controlnet_names(context: Any) -> list[str]:
    """What `ad_controlnet_model` may name: the ControlNet files in models/ControlNet (by name, as
    sd-webui-controlnet lists them without the hash; a diffusers folder by its name), annotators left out."""
    names = set()
    for path in context.models.files(CONTROLNET_FOLDER):
        rel = path.relative_to(context.models.path(CONTROLNET_FOLDER))
        if rel.parts[0] == "annotators":
            continue
        if path.stem == "diffusion_pytorch_model" and (path.parent / "config.json").is_file():
            names.add(path.parent.name)
        else:
            names.add(path.stem)
    return sorted(names)


# the preprocessors the accordion offers for the ControlNet ("None": ADetailer's pick from the model's name)
CONTROLNET_MODULES = (
    "None", "inpaint_only", "lineart_coarse", "lineart_realistic", "lineart_standard", "tile_resample",
    "canny", "scribble_xdog", "none",
)  # fmt: skip


def unit_fields(models: list[str], controlnets: list[str] | tuple[str, ...] = ()) -> tuple[Field, ...]:
    return (
        Field("enable", "checkbox", False, label="Enable ADetailer"),
        Field("ad_model", "dropdown", "None", label="ADetailer model", choices=("None", *models)),
        Field("ad_prompt", "textarea", "", label="ADetailer prompt", info="empty: the image's prompt"),
        Field("ad_negative_prompt", "textarea", "", label="ADetailer negative prompt"),
        Field("ad_confidence", "slider", 0.3, label="Detection confidence", minimum=0.0, maximum=1.0),
        Field("ad_denoising_strength", "slider", 0.4, label="Denoising strength", minimum=0.0, maximum=1.0),
        Field("ad_mask_blur", "slider", 4, label="Mask blur", minimum=0, maximum=64, step=1),
        Field("ad_dilate_erode", "slider", 4, label="Mask dilate/erode", minimum=-128, maximum=128, step=4),
        Field("ad_inpaint_only_masked", "checkbox", True, label="Inpaint only masked"),
        Field(
            "ad_inpaint_only_masked_padding",
            "slider",
            32,
            label="Inpaint only masked padding",
            minimum=0,
            maximum=256,
            step=4,
        ),
        Field("ad_controlnet_model", "dropdown", "None", label="ControlNet model",
              choices=("None", *controlnets)),
        Field("ad_controlnet_module", "dropdown", "None", label="ControlNet preprocessor",
              choices=CONTROLNET_MODULES, info="None: the one the model's name calls for"),
        Field("ad_controlnet_weight", "slider", 1.0, label="ControlNet weight", minimum=0.0, maximum=1.0),
        Field("ad_controlnet_guidance_start", "slider", 0.0, label="ControlNet guidance start", minimum=0.0,
              maximum=1.0),
        Field("ad_controlnet_guidance_end", "slider", 1.0, label="ControlNet guidance end", minimum=0.0,
              maximum=1.0),
    )  # fmt: skip


@hookimpl
def register(registry, context):
    models = model_names(context)
    fields = unit_fields(models, controlnet_names(context))
    registry.add(UiSection(("txt2img", "img2img"), "Detailer", fields=fields))
    registry.add(
        SettingsSection(
            "ADetailer",
            (Field("save_images_before", "checkbox", False, label="Save images before ADetailer"),),
        )
    )
    registry.add(RouteSpec("/adetailer/v1/version", lambda: {"version": infotext.VERSION}, root=True))
    registry.add(RouteSpec("/adetailer/v1/ad_model", lambda: {"ad_model": model_names(context)}, root=True))


@hookimpl
def from_alwayson(script_args, context):
    """ADetailer's positional args, checked whole; `[false, ...]` switches it off."""
    if not isinstance(script_args, list):
        raise RequestError("args", f"must be a list, as ADetailer takes it; got {type(script_args).__name__}")
    if script_args and script_args[0] is False and not any(isinstance(a, Mapping) for a in script_args):
        return {"enable": False}
    try:
        parsed = units.parse_args(script_args, model_names(context), controlnet_names(context))
    except RequestError as e:  # "ADetailer.args[2].ad_x": the host prefixes alwayson_scripts.ADetailer
        raise RequestError(e.field.removeprefix("ADetailer."), e.message) from e
    return {"enable": parsed.enabled, OWN_ARGS: list(script_args)}


def detailer_args(args: Mapping[str, Any], context: Any) -> units.DetailerArgs | None:
    """The request's units: the A1111 args when it came with them, else the accordion's one unit."""
    raw = args.get(OWN_ARGS)
    if raw is not None:
        parsed = units.parse_args(raw, model_names(context), controlnet_names(context))
        return parsed if parsed.active_units else None
    if not args["enable"]:
        return None
    unit = {k: v for k, v in args.items() if k.startswith("ad_")}
    parsed = units.parse_args([True, False, unit], model_names(context), controlnet_names(context))
    return parsed if parsed.active_units else None


@hookimpl
def request_received(request, args, context):
    """Refuse bad values before the job runs (A1111 args were checked on arrival; these come from the
    accordion, or from a native job's `extension_args.detailer._adetailer`)."""
    try:
        detailer_args(args, context)
    except RequestError as e:
        if args.get(OWN_ARGS) is not None:  # ADetailer's args in extension_args (a native job)
            field = OWN_ARGS + e.field.removeprefix("ADetailer.args")
        else:
            key = e.field.rpartition(".")[2]
            field = key if key.startswith("ad_") else "enable"
        raise RequestError(f"extension_args.detailer.{field}", e.message) from e


@hookimpl
def after_decode(images, request, args, context, runner, settings, image_info):
    _before.pictures = []
    dargs = detailer_args(args, context)
    if dargs is None or runner is None:
        return None
    find = detectors.finder([model_folder(context)])
    out = []
    for im, info in zip(images, image_info, strict=True):
        source = detail.source_image(dargs, request, im, info.index)
        done = detail.detail_image(
            source,
            request,
            dargs,
            find=find,
            run=lambda sub: runner(sub)[0],
            prompt=info.prompt,
            negative_prompt=info.negative_prompt,
            seed=info.seed,
            subseed=info.subseed,
        )
        out.append(done.image)
        if settings["save_images_before"]:
            _before.pictures.append(im)
    return out


@hookimpl
def extra_infotext(args, context):
    dargs = detailer_args(args, context)
    return infotext.infotext_params(dargs) if dargs is not None else None


@hookimpl
def after_save(image):
    """Save the picture as decoded next to the detailed one (only when that one was saved)."""
    pending = getattr(_before, "pictures", None)
    if not pending:
        return
    original = pending.pop(0)
    if image.path is None:
        return
    params = parse_infotext(image.infotext)
    prompt, negative = params.pop("Prompt", ""), params.pop("Negative prompt", "")
    params = {k: v for k, v in params.items() if not k.startswith("ADetailer ")}
    text = format_infotext(prompt, negative, params)
    path = Path(image.path)
    save_image(original, path.parent, image.seed, text, path.suffix.lstrip(".") or "png")


@hookimpl
def infotext_fields(params, context):
    """The accordion's values from an image's infotext (its first unit): PNG Info and "reuse
    parameters". Without ADetailer keys the detailer is switched off, as A1111 pastes it."""
    first = infotext.units_from_params(params).get(0)
    if first is None:
        return {"enable": False}
    names = {f.name for f in unit_fields([])}
    return {"enable": True, **{k: v for k, v in first.items() if k in names}}
