"""A1111 request payloads (pydantic) and their translation into `webui.core.types` requests.

Every field an A1111 v1.10 client may send is accepted. Fields we implement are mapped (a request field
of the same name, `sampler_index` as the old alias of `sampler_name`, `override_settings` for the
checkpoint, VAE and clip skip of this request only). Fields clients routinely send at their defaults are
ignored while they hold those defaults; any other value of them would change the image in a way we do
not implement, so it is refused with a RequestError naming the field (HTTP 422).

`hr_checkpoint_name` ("Use same checkpoint" or empty: the first pass's) and the refiner fields
(`refiner_checkpoint`, "None" or empty: none; `refiner_switch_at`) are request fields of the same name;
a checkpoint of another family is refused when the job is submitted (see webui.core.pass_models).

Forge's fields: `distilled_cfg_scale` reaches the request (Flux dev's guidance input; as in Forge, models
without a guidance input ignore it, and their infotext does not record it); `forge_additional_modules`
becomes the request's `modules` (the text encoder / VAE files a split SD3/Flux model takes);
`hr_additional_modules` naming files is refused (the hires pass uses the first pass's model).

A1111's legacy `firstphase_width/height` set the first pass's size (the payload's width x height is then
the hires target); `disable_extra_networks` takes <lora:...> tags out without applying them;
`override_settings_restore_afterwards: false` is refused (overrides never outlive the request), and so
are `latent_mask`, `comments` and `force_task_id` when they hold a value.

A1111's built-in "Soft Inpainting" always-on script becomes the request's soft inpainting fields
(webui.api.builtin_scripts); it needs no extension.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from webui.api import builtin_scripts
from webui.core.sampling.catalog import SamplerCatalog
from webui.core.settings import REQUEST_DEFAULT_SETTINGS, request_defaults
from webui.core.types import GenerationRequest, RequestError


class A1111Processing(BaseModel):
    """The fields txt2img and img2img share (A1111's StableDiffusionProcessing API model)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}
    force_task_id: str | None = None
    infotext: str | None = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    sampler_noise_scheduler_override: Any = None
    distilled_cfg_scale: float | None = None  # Forge's: Flux dev's guidance input; other models ignore it
    forge_additional_modules: list[str] | None = None  # Forge's: text encoder / VAE files of a split model


class A1111Txt2Img(A1111Processing):
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_additional_modules: list[str] | None = None
    firstphase_width: int = 0  # A1111's legacy hires fields: the first pass's size (see to_request)
    firstphase_height: int = 0


class A1111Img2Img(A1111Processing):
    init_images: list[Any] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
    # Sfumato's own outpainting (Img2ImgRequest's outpaint_* fields; A1111 clients reach the same engine
    # through script_name "Outpainting mk2" / "Poor man's outpainting")
    outpaint_pixels: int | None = None
    outpaint_directions: list[str] | None = None
    outpaint_fill: str | None = None
    outpaint_noise: float | None = None
    outpaint_falloff: float | None = None
    outpaint_color_variation: float | None = None
    differential_diffusion: bool | None = None  # Sfumato's (A1111's Soft Inpainting: alwayson_scripts)


def _falsy(v: Any) -> bool:
    return v is None or v is False or v == 0 or v == "" or v == [] or v == {} or v == "None"


# Fields that only matter when they hold a non-default value (which we cannot honour): refused then.
_REFUSED_UNLESS_DEFAULT: dict[str, Callable[[Any], bool]] = {
    "tiling": _falsy,
    "s_min_uncond": _falsy,
    "script_name": _falsy,
    "script_args": _falsy,
    "alwayson_scripts": _falsy,
    "infotext": _falsy,
    "enable_hr": _falsy,
    "sampler_noise_scheduler_override": _falsy,
    "outpath_samples": _falsy,
    "outpath_grids": _falsy,
    "comments": _falsy,
    "force_task_id": _falsy,
    "override_settings_restore_afterwards": lambda v: v is True,
    "latent_mask": _falsy,
    "hr_additional_modules": lambda v: _falsy(v) or v == ["Use same choices"],
}
_WHY = {
    "outpath_samples": "output folders cannot be chosen through the API",
    "outpath_grids": "output folders cannot be chosen through the API",
    "alwayson_scripts": "no always-on scripts are installed (GET /sdapi/v1/scripts lists them)",
    "script_name": "no scripts are installed (GET /sdapi/v1/scripts lists them)",
    "script_args": "no scripts are installed (GET /sdapi/v1/scripts lists them)",
    "hr_additional_modules": "the hires pass uses the first pass's modules ('Use same choices')",
    "comments": "comments are not stored with the images",
    "force_task_id": "job ids are given by the job queue (GET /api/v1/jobs lists them)",
    "override_settings_restore_afterwards": (
        "override_settings always apply to this request only; change settings with POST /sdapi/v1/options"
    ),
    "latent_mask": "a separate latent mask is not supported; send `mask` (the inpaint mask) only",
}
# Request fields handled here rather than copied by name.
_SPECIAL = frozenset(
    {
        "styles",
        "sampler_name",
        "scheduler",
        "s_tmax",
        "checkpoint",
        "vae",
        "clip_skip",
        "save_images",
        "modules",
    }
)
# override_settings keys that do not change the pixels (saving, UI, live preview): accepted, ignored.
_HARMLESS_SETTINGS = frozenset(
    {
        "samples_save", "samples_format", "save_images_add_number", "grid_save", "grid_format",
        "jpeg_quality", "webp_lossless", "export_for_4chan", "enable_pnginfo", "save_txt",
        "save_to_dirs", "grid_save_to_dirs", "use_save_to_dirs_for_ui", "directories_filename_pattern",
        "samples_filename_pattern", "show_progressbar", "live_previews_enable", "show_progress_every_n_steps",
        "show_progress_type", "live_preview_content", "return_grid", "do_not_show_images",
        "sd_checkpoint_cache", "sd_vae_checkpoint_cache", "enable_emphasis", "save_init_img", "return_mask",
        "return_mask_composite", "img2img_color_correction",
    }
)  # fmt: skip


def _refuse_unsupported(payload: BaseModel, request_fields: frozenset[str], allowed: frozenset[str]) -> None:
    data = payload.model_dump()
    for name, is_default in _REFUSED_UNLESS_DEFAULT.items():
        if name in allowed:
            continue
        if name in data and name not in request_fields and not is_default(data[name]):
            why = _WHY.get(name, "it is not supported yet, and it would change the image")
            raise RequestError(name, f"{data[name]!r} cannot be honoured: {why}")


def _override(overrides: Mapping[str, Any], current: Callable[[str], Any]) -> dict[str, Any]:
    """The request fields override_settings sets; refuses settings that would change the image."""
    mapped: dict[str, Any] = {}
    for key, value in overrides.items():
        field = f"override_settings.{key}"
        if key == "sd_model_checkpoint":
            if value is not None and not isinstance(value, str):
                raise RequestError(field, "must be a checkpoint title or name")
            mapped["checkpoint"] = value or None
        elif key == "sd_vae":
            if value is not None and not isinstance(value, str):
                raise RequestError(field, "must be a VAE name, 'Automatic' or 'None'")
            mapped["vae"] = value or None
        elif key == "CLIP_stop_at_last_layers":
            mapped["clip_skip"] = value
        elif key in REQUEST_DEFAULT_SETTINGS:
            pass  # the request's defaults (to_request reads them through `layered`)
        elif key.startswith("outdir") or key in _HARMLESS_SETTINGS:
            if key.startswith("outdir") and value:
                raise RequestError(field, "output folders cannot be chosen through the API")
        elif value != current(key):
            raise RequestError(field, "this setting cannot be overridden per request (it is not supported)")
    return mapped


def _first_phase(payload: A1111Processing) -> A1111Processing:
    """A1111's legacy hires fields: `firstphase_width/height` are the first pass's size, and with
    `enable_hr` the payload's width x height is the hires target (unless hr_resize_x/y say it)."""
    if not isinstance(payload, A1111Txt2Img) or not (payload.firstphase_width or payload.firstphase_height):
        return payload
    for name in ("firstphase_width", "firstphase_height"):
        if getattr(payload, name) < 0:
            raise RequestError(name, "must be 0 (unused) or a size in pixels")
    update: dict[str, Any] = {
        "width": payload.firstphase_width or payload.width,
        "height": payload.firstphase_height or payload.height,
        "firstphase_width": 0,
        "firstphase_height": 0,
    }
    if payload.enable_hr and not (payload.hr_resize_x or payload.hr_resize_y):
        update |= {"hr_resize_x": payload.width, "hr_resize_y": payload.height}
    return payload.model_copy(update=update)


def to_request(
    payload: A1111Processing,
    request_type: type[GenerationRequest],
    settings: Callable[[str], Any],
    images: Mapping[str, Any] | None = None,
    *,
    alwayson: Callable[[Mapping[str, Any]], dict[str, dict[str, Any]]] | None = None,
    script: bool = False,
    samplers: SamplerCatalog | None = None,
) -> GenerationRequest:
    """The core request for an A1111 payload. `settings(key)` reads the stored options (None if unset).

    `images` holds already-decoded image fields (init_images, mask) for request types that have them;
    `alwayson` turns `alwayson_scripts` into `extension_args` when extensions are loaded; `script` says a
    selectable script was found for `script_name` (it then runs the request itself).
    """
    names = frozenset(request_type.field_names())
    payload = _first_phase(payload)
    builtin, others = builtin_scripts.split(payload.alwayson_scripts, names)  # Soft Inpainting
    payload = payload.model_copy(update={"alwayson_scripts": others})
    allowed = ({"alwayson_scripts"} if alwayson else set()) | (
        {"script_name", "script_args"} if script else set()
    )
    _refuse_unsupported(payload, names, frozenset(allowed))
    data = payload.model_dump()
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in names and name not in _SPECIAL and value is not None and name not in (images or {}):
            kwargs[name] = value
    kwargs.update(images or {})
    kwargs["styles"] = tuple(data["styles"] or ())
    kwargs["modules"] = tuple(data["forge_additional_modules"] or ())
    kwargs["sampler_name"] = data["sampler_name"] or data["sampler_index"] or "Euler"
    kwargs["scheduler"] = data["scheduler"] or "Automatic"
    if data["s_tmax"] is not None:
        kwargs["s_tmax"] = data["s_tmax"] if data["s_tmax"] > 0 else math.inf
    for field, key in (("checkpoint", "sd_model_checkpoint"), ("vae", "sd_vae")):
        value = settings(key)
        if isinstance(value, str) and value:
            kwargs[field] = value
    clip_skip = settings("CLIP_stop_at_last_layers")
    if isinstance(clip_skip, int) and not isinstance(clip_skip, bool):
        kwargs["clip_skip"] = clip_skip
    overrides = data["override_settings"] or {}

    def layered(key: str) -> Any:  # A1111: the payload's fields, then override_settings, then the options
        return overrides[key] if key in overrides else settings(key)

    for name, value in request_defaults(layered, names, kwargs["sampler_name"]).items():
        kwargs.setdefault(name, value)
    kwargs.update(_override(overrides, settings))
    kwargs["save_images"] = bool(data["save_images"]) and not data["do_not_save_samples"]
    kwargs.update(builtin)
    if alwayson is not None and data.get("alwayson_scripts"):
        kwargs["extension_args"] = alwayson(data["alwayson_scripts"])
    known = {f.name for f in dataclasses.fields(request_type)}
    try:
        request = request_type(**{k: v for k, v in kwargs.items() if k in known})
    except TypeError as e:
        raise RequestError("request", str(e)) from e
    request.validate(samplers)
    return request


def native_request(
    request_type: type[GenerationRequest],
    data: Mapping[str, Any],
    images: Mapping[str, Any] | None = None,
    samplers: SamplerCatalog | None = None,
    extension_args: Callable[[Mapping[str, Any]], dict[str, dict[str, Any]]] | None = None,
) -> GenerationRequest:
    """A core request from the native API's `request` object: our own field names, nothing else.
    `extension_args` checks that field against the extensions' own fields (None: none are loaded)."""
    if not isinstance(data, Mapping):
        raise RequestError("request", "must be an object of request fields")
    names = set(request_type.field_names())
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if images and key in images:
            continue
        if key not in names:
            raise RequestError(key, f"unknown field for {request_type.__name__}")
        if key == "extension_args":
            if extension_args is None:
                raise RequestError(key, "no extensions are loaded")
            value = extension_args(value)
        if key == "s_tmax" and value in (None, "inf", "Infinity"):
            value = math.inf
        if key in ("styles", "modules"):
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise RequestError(key, f"must be a list of {key[:-1]} names")
            value = tuple(value)
        kwargs[key] = value
    kwargs.update(images or {})
    request = request_type(**kwargs)
    request.validate(samplers)
    return request
