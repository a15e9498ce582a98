"""Generate / Interrupt / Skip for a tab: fields -> request -> job in the user's name -> streamed frames.

Every click is a job in the one queue (the same fair line as the API), owned by the logged-in user or
"anonymous". The Generate handler is a generator that follows the job (polling.follow) and streams
status, preview and images; Interrupt and Skip act only on the caller's own job. A reloaded page finds
the job again through `reattach` (the browser's remembered id, checked against the owner, or the
server's user -> job map).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, generate_refusal, user_of
from webui.ui.polling import Frame, follow, info_html, status_html, warnings_html

_INTS = frozenset(
    {
        "steps", "width", "height", "n_iter", "batch_size", "seed", "subseed", "seed_resize_from_w",
        "seed_resize_from_h", "clip_skip", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "mask_blur",
        "inpaint_full_res_padding", "inpainting_fill", "resize_mode", "outpaint_pixels",
        "inpainting_mask_invert", "upscaling_resize_w", "upscaling_resize_h",
    }
)  # fmt: skip
_FLOATS = frozenset(
    {
        "cfg_scale",
        "distilled_cfg_scale",
        "image_cfg_scale",
        "subseed_strength",
        "denoising_strength",
        "hr_scale",
        "refiner_switch_at",
        "initial_noise_multiplier",
        "outpaint_noise",
        "upscaling_resize",
        "extras_upscaler_2_visibility",
        "gfpgan_visibility",
        "codeformer_visibility",
        "codeformer_weight",
        "code_former_weight",
    }
)
Extra = Callable[[Mapping[str, Any]], dict[str, Any]]


def _coerce(name: str, value: Any) -> Any:
    from webui.core.types import RequestError

    if name in _INTS:
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(name, f"must be a whole number, got {value}")
        try:
            return int(round(float(value)))
        except (TypeError, ValueError) as e:
            raise RequestError(name, f"must be a whole number, got {value!r}") from e
    if name in _FLOATS:
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise RequestError(name, f"must be a number, got {value!r}") from e
    if name == "styles":
        return tuple(value or ())
    if name in ("outpaint_directions", "modules"):
        return tuple(value or ())
    return value


def build_request(
    kind: str,
    values: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    samplers: Any = None,
    settings: Callable[[str], Any] | None = None,
) -> Any:
    """The core request of this kind from field values (names as the request's fields); fields the tab
    has no control for take their stored settings (`settings(key)`, see core.settings.request_defaults)."""
    from webui.core.jobs import REQUEST_KINDS
    from webui.core.settings import request_defaults
    from webui.core.types import RequestError

    cls = REQUEST_KINDS.get(kind)
    if cls is None:
        raise RequestError("kind", f"{kind} is not available yet in this version")
    names = set(cls.field_names())
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in names and value is not None and not name.startswith("_"):
            kwargs[name] = _coerce(name, value)
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        if kwargs.get(name) == 0:
            kwargs[name] = -1
    if kwargs.get("checkpoint") in ("", None):
        kwargs.pop("checkpoint", None)
    for name, same in (("hr_sampler_name", "Use same sampler"), ("hr_scheduler", "Use same scheduler")):
        if kwargs.get(name) in ("", same):
            kwargs.pop(name)  # None: the first pass's
    kwargs.update(extra or {})
    if settings is not None:
        for name, value in request_defaults(settings, names, kwargs.get("sampler_name")).items():
            kwargs.setdefault(name, value)
    request = cls(**kwargs)
    request.validate(samplers)
    return request


def _check_models(ctx: StudioContext, request: Any) -> None:
    from webui.core.models.manager import ModelNotFound
    from webui.core.types import RequestError

    if not hasattr(request, "checkpoint"):
        return  # an extras job uses no checkpoint
    try:
        ctx.services.manager.resolve(request.checkpoint)
    except ModelNotFound as e:
        raise RequestError("checkpoint", str(e)) from e
    try:
        ctx.services.manager.resolve_vae(request.vae)
    except ModelNotFound as e:
        raise RequestError("vae", str(e)) from e


RESULT_OUTPUTS = 8  # how many components frame_outputs fills (TabRunner.result_components)


def frame_outputs(frame: Frame) -> tuple[Any, ...]:
    """(status, preview, gallery, info, infotexts, seeds, warnings, selected) for a tab's results column;
    a new gallery selects its first image. While a job draws its live preview, the preview takes the
    gallery's place (at the output's size); the gallery comes back with the finished images."""
    skip = gr.skip()
    images = {} if frame.gallery is None else {"value": frame.gallery}
    if frame.done:
        preview: Any = gr.update(value=None, visible=False)
        gallery: Any = gr.update(**images, visible=True)
    elif frame.preview is not None:
        preview = gr.update(value=frame.preview, visible=True)
        gallery = gr.update(**images, visible=False)
    else:
        preview = skip
        gallery = frame.gallery if frame.gallery is not None else skip
    info = (frame.infotexts[0] if frame.infotexts else "") if frame.infotexts is not None else skip
    infotexts = frame.infotexts if frame.infotexts is not None else skip
    seeds = frame.seeds if frame.seeds is not None else skip
    warnings = (
        skip
        if frame.warnings is None
        else gr.update(value=warnings_html(frame.warnings), visible=bool(frame.warnings))
    )
    selected = 0 if frame.gallery is not None else skip
    return frame.status, preview, gallery, info, infotexts, seeds, warnings, selected


def error_outputs(message: str) -> tuple[Any, ...]:
    skip = gr.skip()
    hidden = gr.update(value="", visible=False)
    error = status_html(message, 0.0, "error")
    return error, gr.update(visible=False), gr.update(visible=True), skip, skip, skip, hidden, skip


class TabRunner:
    """Wires one tab's Generate/Interrupt/Skip to the job queue."""

    def __init__(
        self,
        ctx: StudioContext,
        kind: str,
        fields: Mapping[str, Any],
        job_state: Any,
        extra: Extra | None = None,
        extra_inputs: tuple[str, ...] = (),
        extensions: Any | None = None,
        scripts: Any | None = None,
    ) -> None:
        """`extensions` (extension_sections.ExtensionInputs) and `scripts` (script_ui.ScriptInputs) add
        their controls to the tab's inputs: extension values become `extension_args`, a selected
        script runs the request through the queue instead of one job."""
        self.ctx, self.kind, self.fields, self.job_state = ctx, kind, dict(fields), job_state
        self.extras: list[Extra] = [extra] if extra is not None else []
        self.input_names = [n for n in self.fields if not n.startswith("_")] + list(extra_inputs)
        self.scripts = scripts
        for group in (extensions, scripts):
            for key, component in group.components.items() if group is not None else ():
                self.fields[key] = component
                self.input_names.append(key)
        if extensions is not None:
            self.extras.append(extensions.extra)

    @property
    def result_components(self) -> list[Any]:
        f = self.fields
        names = ("_status", "_preview", "_gallery", "_info", "_infotexts", "_seeds", "_warnings", "_selected")
        return [f[n] for n in names]

    def request(self, values: Mapping[str, Any]) -> Any:
        """The tab's request from its submitted values (checked, models resolved)."""
        extra: dict[str, Any] = {}
        for make in self.extras:
            extra.update(make(values))
        request = build_request(
            self.kind, values, extra, self.ctx.services.engine.samplers, self.ctx.services.settings.get
        )
        _check_models(self.ctx, request)
        return request

    def submit(self, values: Mapping[str, Any], user: str) -> Any:
        request = self.request(values)
        info = self.ctx.services.queue.submit(request, owner=user)
        self.ctx.remember_job(user, info.id)
        return info

    def stream(self, job_id: str) -> Iterator[tuple[Any, ...]]:
        for frame in follow(self.ctx.services.queue, job_id, note=self.ctx.stopping_note):
            yield frame_outputs(frame)

    def wire(self) -> None:
        f = self.fields
        inputs = [f[n] for n in self.input_names]
        outputs = [*self.result_components, self.job_state]
        names = self.input_names

        by_component = {f[n]: n for n in names}

        def generate(data: dict[Any, Any], request: gr.Request) -> Iterator[tuple[Any, ...]]:
            user = user_of(request)
            refused = generate_refusal(self.ctx.services, request)
            if refused is not None:  # a viewer: may look, not make
                yield (*error_outputs(refused), gr.skip())
                return
            values = {by_component[c]: v for c, v in data.items() if c in by_component}
            try:
                script = self.scripts.selected(values) if self.scripts is not None else None
                if script is not None:
                    job_request = self.request(values)
                else:
                    info = self.submit(values, user)
            except Exception as e:  # a bad field (RequestError), a full or closed queue (QueueFull)
                yield (*error_outputs(error_text(e, self.fields)), gr.skip())
                return
            if script is not None:
                from webui.ui.script_ui import run_script

                starting = Frame(status_html(f"{script[0].name}: starting", 0.0, busy=True), warnings=())
                yield (*frame_outputs(starting), gr.skip())
                for frame, job_id in run_script(self.ctx, script[0], job_request, script[1], user):
                    yield (*frame_outputs(frame), job_id if job_id is not None else gr.skip())
                return
            yield (*frame_outputs(Frame(status_html("Queued", 0.0, busy=True), warnings=())), info.id)
            for out in self.stream(info.id):
                yield (*out, gr.skip())

        f["_generate"].click(
            generate,
            set(inputs),
            outputs,
            concurrency_limit=None,
            show_progress="hidden",
            api_visibility="private",
        )

        def interrupt(hint: str | None, request: gr.Request) -> str:
            return self._control(hint, request, "cancel")

        def skip(hint: str | None, request: gr.Request) -> str:
            return self._control(hint, request, "skip")

        for button, fn in ((f["_interrupt"], interrupt), (f["_skip"], skip)):
            button.click(
                fn, self.job_state, f["_status"], concurrency_limit=None, show_progress="hidden",
                api_visibility="private", queue=False,
            )  # fmt: skip

    def _control(self, hint: str | None, request: Any, action: str) -> Any:
        user = user_of(request)
        job_id = self.ctx.active_job_id(user, hint)
        if job_id is None:
            return gr.skip()
        queue = self.ctx.services.queue
        try:
            info = getattr(queue, action)(job_id, by=user)
        except (LookupError, PermissionError):
            return gr.skip()
        self.ctx.mark_stopping(job_id, action, info.progress.batch)
        return info_html(info, self.ctx.stopping_note)


# request fields a tab fills from a picture, not from a labelled control
_PICTURE_LABELS = {"init_images": "Image", "mask": "Mask"}


def field_label(fields: Mapping[str, Any], name: str) -> str:
    """The label the user sees for a request field ("Width", "Sampling steps"); the name if none."""
    base = re.sub(r"\[\d+\]$", "", name)
    label = getattr(fields.get(base), "label", None)
    if isinstance(label, str) and label:
        return label
    return _PICTURE_LABELS.get(base, name)


def error_text(e: BaseException, fields: Mapping[str, Any]) -> str:
    """An error for the status line: a bad field is named by its label."""
    from webui.core.types import RequestError

    if isinstance(e, RequestError):
        return f"{field_label(fields, e.field)}: {e.message}"
    return str(e) or type(e).__name__


def escape(text: str) -> str:
    return html.escape(text)
