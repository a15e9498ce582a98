"""The hooks an extension may implement (pluggy hookspecs, project name "sfumato").

An extension module defines plain functions with these names, marked `@hookimpl` (from
webui.plugins.api). Like pytest's hooks, an implementation may accept only the arguments it needs, in
any order, by name. Every hook gets:

- `request`: the request (a frozen GenerationRequest subclass: Txt2ImgRequest, Img2ImgRequest, ...)
- `args`: this extension's UI values by field name (`request.extension_args[<name>]` with the
  defaults of its UiSection fields filled in)
- `context`: its ExtensionContext (name, folder, data_dir, models_dir, device)
- `settings`: this extension's SettingsSection values by field name (what the Settings tab or
  /sdapi/v1/options stored under `<extension name>.<field name>`, defaults filled in) (API 2)
- `components` (every hook but `register` and `request_received`): the job's loaded model as a
  read-only `JobModel` (its denoiser, VAE, text encoders, device, dtype, family). Read it, never change
  it in place: patch a model for one call by wrapping it in `before_model`.

Hooks run in the load order (extension names sorted, case-insensitively). A hook that raises is
recorded with its traceback summary, the extension is skipped for the rest of that job, and the job
finishes without it (see webui.plugins.host).
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "sfumato"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register(registry: Any, context: Any, settings: Any) -> None:
    """Called once when the extension loads: add descriptors with `registry.add(...)`
    (UiSection, SettingsSection, UpscalerSpec, SamplerSpec, RouteSpec, ScriptSpec).
    `context` is an ExtensionContext (its folder, the data and models folders, the device).
    `settings` (API 2.1): this extension's settings as stored when the app started, by field name
    (`<extension name>.<field name>` in config.json), unchecked, since the SettingsSection is declared
    in this very hook: check a value with its Field's `coerce` and fall back to the default. What
    register reads from them (how many units the UI draws) applies at the next start."""


@hookspec
def from_alwayson(script_args: Any, context: Any) -> Any:
    """(API 2) An A1111 client's `alwayson_scripts.<this extension>.args`, exactly as sent (a list or an
    object): return this extension's field values by name (a dict; checked against the fields as any
    extension_args are), or None for the default mapping (a list by field order, an object by name).
    sd-webui-controlnet clients send a list of unit objects, for instance. Raise RequestError(field,
    message): the field is reported as `alwayson_scripts.<extension>.<field>`."""


@hookspec
def infotext_fields(params: Any, context: Any) -> Any:
    """(API 2) An image's parsed infotext (`{"Prompt": ..., "Negative prompt": ..., key: text}`, as
    parse_infotext reads it) -> this extension's UI field values by name (a dict; or None), which PNG
    Info's "send to" and "reuse parameters" put in its accordion. Values its fields cannot take are left
    out; return `{"enable": False}`-style values for an infotext without your keys, as A1111 does."""


@hookspec
def request_received(request: Any, args: Any, context: Any, settings: Any) -> Any:
    """Before the job runs. Return a modified request (`dataclasses.replace(request, ...)`, same type)
    or None to leave it. Raise RequestError(field, message) to refuse a bad value; the job then fails
    with that message, as for any invalid request."""


@hookspec
def on_step(
    point: Any, state: Any, request: Any, args: Any, context: Any, components: Any, settings: Any
) -> None:
    """At every sampling step, three times: HookPoint.BEFORE_STEP, AFTER_CFG (state.noise_pred is the
    guided prediction) and AFTER_STEP. `state` is a mutable StepState: assign new tensors to
    state.latents / state.noise_pred (same shape) to change the result."""


@hookspec
def before_model(state: Any, request: Any, args: Any, context: Any, components: Any, settings: Any) -> None:
    """Right before every call of the denoiser (API 2). `state` is a mutable ModelCallState:
    `state.step` (from 0) of `state.total`, and `state.inputs`, a ModelInputs holding the whole
    batch's rows group by group ([uncond..., cond...]): add model inputs to `state.inputs.extra`
    (ControlNet's `down_block_additional_residuals` / `mid_block_additional_residual`, T2I-Adapter's
    `down_intrablock_additional_residuals`, `cross_attention_kwargs`), or replace `state.inputs.model`
    by a wrapper that patches it for this call. Everything set here lives for this call only; never
    change the model's modules or weights in place. A hook that raises is undone for that call, except
    RequestError(field, message): that refuses the job with its message (a model of the extension's that
    does not fit the job's checkpoint, which only the loaded model tells)."""


@hookspec
def after_decode(
    images: Any,
    request: Any,
    args: Any,
    context: Any,
    components: Any,
    runner: Any,
    settings: Any,
    image_info: Any,
) -> Any:
    """After the VAE decode of a batch: return a list with as many PIL images (post-processed), or
    None to leave them. `runner(Img2ImgRequest(...))` (API 2) runs an img2img or inpaint pass on the
    job's loaded model and returns its pictures (a detailer repaints faces with it); it saves nothing,
    runs no extension hooks, and ignores the sub-request's checkpoint fields. `image_info` (API 2) has
    one ImageInfo per image, in order: the prompt and negative prompt as sampled (styles applied), the
    image's own resolved seed and subseed, and its index in the job (`request.seed` may be -1)."""


@hookspec
def extra_infotext(request: Any, args: Any, context: Any, components: Any, settings: Any) -> Any:
    """Return a dict of extra infotext parameters for this request's images (or None)."""


@hookspec
def after_save(image: Any, request: Any, args: Any, context: Any, components: Any, settings: Any) -> None:
    """After an image is final: `image` is a GeneratedImage (image, seed, infotext, path or None)."""
