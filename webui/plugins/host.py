"""PluginHost: the loaded extensions, what they registered, and the engine's hooks with isolation.

`PluginHost.for_config(config)` discovers and loads everything once (restart or `reload()` to apply
enable/disable changes). It implements webui.core.extension_points.EngineHooks: the engine calls it
around each run. Isolation, per job (a job runs on one thread; the job starts at request_received):

- an extension whose hook raises is recorded with a traceback summary (log, `take_problems()`, and
  its entry in `extensions()`), then skipped for the rest of that job; the job goes on without it;
- a hook that returns something unusable (a request of another type, a different number of images,
  latents of another shape) is treated the same way and its result discarded;
- `request_received` may refuse a request by raising RequestError naming a field: that propagates;
- running out of memory (a ControlNet on the GPU, a detailer's sub-pass) and a cancelled sub-pass are
  the job's, not the extension's: they propagate, and the job fails with the worker's out-of-memory
  advice or stops, instead of going on without the extension.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from webui.core.models.cache import ModelCache
from webui.core.types import MAX_INIT_PIXELS, GeneratedImage, GenerationRequest, Img2ImgRequest, RequestError
from webui.plugins import hookspecs
from webui.plugins.descriptors import (
    IMAGE_KINDS,
    UPSCALER_KIND,
    Descriptor,
    ExtensionContext,
    Field,
    RouteSpec,
    SamplerSpec,
    ScriptSpec,
    SettingsSection,
    UiSection,
    UpscalerSpec,
)
from webui.plugins.discovery import Found, discover, entry_points
from webui.plugins.ext_models import DEFAULT_BUDGET, ExtensionModels
from webui.plugins.job_model import JobModel
from webui.plugins.loader import Extension, load_extension, summarize, take_new_upscalers
from webui.plugins.manifest import Manifest
from webui.plugins.state import STATE_FILE, ExtensionState

if TYPE_CHECKING:
    from PIL import Image

    from webui.core.config import AppConfig
    from webui.core.extension_points import ImageInfo, SubPass
    from webui.core.models.components import Components
    from webui.core.sampling.loop import Hook, HookPoint, ModelCallState, ModelHook, StepState

log = logging.getLogger("sfumato.plugins")
R = TypeVar("R", bound=GenerationRequest)
BUILTIN_DIR = Path(__file__).resolve().parents[2] / "extensions"
# hooks whose RequestError refuses the job (with that field and message) instead of skipping the
# extension: request_received, and before_model (what only the loaded model tells: a ControlNet for
# SDXL asked of an SD1 checkpoint)
REFUSING_HOOKS = ("request_received", "before_model")


@dataclass(frozen=True)
class ExtensionInfo:
    """One row of the Extensions tab and of /sdapi/v1/extensions."""

    name: str
    version: str
    description: str
    source: str  # builtin | user | pip
    location: str
    enabled: bool
    status: str  # loaded | disabled | invalid | incompatible | failed
    error: str | None
    notes: tuple[str, ...]
    last_job_error: str | None
    requirements: tuple[str, ...] = ()  # from the manifest (shown with their state; never auto-installed)


@dataclass
class _Job:
    failed: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    components: JobModel | None = None  # the job's model, once it is held (model_hooks)


class PluginHost:
    def __init__(self, extensions: Sequence[Extension], pm: pluggy.PluginManager | None = None) -> None:
        self._extensions = list(extensions)
        self._by_name = {e.name: e for e in self._extensions}
        self._pm = pm
        self._local = threading.local()
        self._lock = threading.Lock()
        self._last_error: dict[str, str] = {}
        self._load_args: tuple[Any, ...] = ()
        self._settings_get: Callable[[str], Any] | None = None
        self._models: ExtensionModels | None = None  # the extensions' shared model cache (load)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        found: Iterable[Found],
        *,
        data_dir: Path,
        outputs_dir: Path | None = None,
        device: str = "cpu",
        disabled: frozenset[str] = frozenset(),
        model_budget: int = DEFAULT_BUDGET,
        stored_settings: Mapping[str, Any] | None = None,
    ) -> PluginHost:
        """Load what was found; extensions share one cache of their own models of `model_budget` bytes.
        `stored_settings` (config.json's keys) reach each `register` hook as its own raw settings."""
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        models = ExtensionModels(data_dir / "models", ModelCache(model_budget), device)

        def context_for(m: Manifest) -> ExtensionContext:
            outputs = outputs_dir or data_dir / "outputs"
            return ExtensionContext(m.name, m.folder, data_dir, data_dir / "models", outputs, device, models)

        loaded = [load_extension(f, pm, disabled, context_for, stored_settings) for f in found]
        host = cls(loaded, pm)
        host._models = models
        return host

    @classmethod
    def for_config(
        cls, config: AppConfig, *, builtin_dir: Path = BUILTIN_DIR, include_pip: bool = True
    ) -> PluginHost:
        """Built-in extensions/, then <data dir>/extensions/, then pip entry points; state from
        <data dir>/extensions.json."""
        folders = [(builtin_dir, "builtin"), (config.data_dir / "extensions", "user")]
        found = discover(folders, entry_points() if include_pip else ())
        disabled = ExtensionState(config.data_dir / STATE_FILE).disabled()
        device = "cpu" if config.use_cpu else _default_device()
        host = cls.load(
            found,
            data_dir=config.data_dir,
            outputs_dir=config.outputs_dir,
            device=device,
            disabled=disabled,
            stored_settings=_stored_settings(config.settings_path),
        )
        host._load_args = (config, builtin_dir, include_pip)
        return host

    def reload(self) -> PluginHost:
        """A new host from the same sources (applies enable/disable changes and updates)."""
        if not self._load_args:
            raise RuntimeError("reload() needs a host made by PluginHost.for_config")
        config, builtin_dir, include_pip = self._load_args
        return PluginHost.for_config(config, builtin_dir=builtin_dir, include_pip=include_pip)

    # ---- what was loaded and registered ---------------------------------------------------------
    def extension(self, name: str) -> Extension:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no extension named {name!r}") from None

    @property
    def loaded(self) -> list[Extension]:
        return [e for e in self._extensions if e.loaded]

    def extensions(self) -> list[ExtensionInfo]:
        with self._lock:
            last = dict(self._last_error)
        return [
            ExtensionInfo(
                e.name,
                e.manifest.version if e.manifest else "",
                e.manifest.description if e.manifest else "",
                e.source,
                e.location,
                e.status != "disabled",
                e.status,
                e.error,
                tuple(e.registry.notes) if e.registry else (),
                last.get(e.name),
                e.manifest.requirements if e.manifest else (),
            )
            for e in self._extensions
        ]

    def _registered(self, kind: type[Descriptor]) -> list[tuple[str, Any]]:
        return [
            (e.name, d) for e in self.loaded if e.registry for d in e.registry.items if isinstance(d, kind)
        ]

    def a1111_names(self, name: str) -> tuple[str, ...]:
        """The names A1111 clients know this extension by: its own, then its manifest's `a1111_names`
        (ADetailer for the detailer): `alwayson_scripts` keys and the prefixes of its root routes."""
        ext = self._by_name.get(name)
        return (name, *(ext.manifest.a1111_names if ext is not None and ext.manifest else ()))

    def ui_sections(self, tab: str | None = None) -> list[tuple[str, UiSection]]:
        return [(n, s) for n, s in self._registered(UiSection) if tab is None or tab in s.tabs]

    def settings_sections(self) -> list[tuple[str, SettingsSection]]:
        return self._registered(SettingsSection)

    def routes(self) -> list[tuple[str, RouteSpec]]:
        return self._registered(RouteSpec)

    def upscalers(self) -> dict[str, UpscalerSpec]:
        """By name; on a clash the first extension in load order wins."""
        out: dict[str, UpscalerSpec] = {}
        for _, spec in self._registered(UpscalerSpec):
            out.setdefault(spec.name, spec)
        return out

    def rescan_upscalers(self) -> list[str]:
        """Model files added or removed since start: run the `register` hook again of each extension whose
        manifest says `rescan = true` and take the upscalers it registers now. Its other descriptors stay
        as they are (the page was built from them); an upscaler with the same name and file keeps its
        object (and the network it loaded). An extension whose hook fails keeps its list; returns those
        failures."""
        stored = _stored_settings(self._load_args[0].settings_path) if self._load_args else {}
        problems = []
        with self._lock:
            for ext in self.loaded:
                if ext.manifest is not None and ext.manifest.rescan:
                    try:
                        take_new_upscalers(ext, stored)
                    except Exception as e:  # a broken hook must not break the studio's refresh
                        problems.append(f"{ext.name}: {summarize(e)}")
        return problems

    def image_upscalers(self) -> dict[str, Any]:
        """EngineHooks: upscaler name -> upscale(image, width, height), for hires fix."""
        return {name: spec.upscale for name, spec in self.upscalers().items()}

    def picture_upscalers(self) -> dict[str, Any]:
        """The studio's picture upscalers by name, as Extras offers them (besides "None"): Lanczos,
        Nearest, then the extensions'. What a Field of kind "upscaler" takes."""
        from webui.core.tasks.extras import picture_upscalers

        return picture_upscalers(self.image_upscalers())

    def samplers(self) -> dict[str, SamplerSpec]:
        out: dict[str, SamplerSpec] = {}
        for _, spec in self._registered(SamplerSpec):
            out.setdefault(spec.name, spec)
        return out

    def scripts(self) -> dict[str, tuple[str, ScriptSpec]]:
        """Selectable scripts by name: (extension name, spec)."""
        out: dict[str, tuple[str, ScriptSpec]] = {}
        for ext, spec in self._registered(ScriptSpec):
            out.setdefault(spec.name, (ext, spec))
        return out

    def ui_fields(self, name: str) -> tuple[Field, ...]:
        ext = self._by_name.get(name)
        return ext.registry.ui_fields() if ext and ext.registry else ()

    # ---- extension args ------------------------------------------------------------------------
    def check_extension_args(
        self, extension_args: Mapping[str, Any], *, max_pixels: int = MAX_INIT_PIXELS
    ) -> dict[str, dict[str, Any]]:
        """Validated values by extension and field, checked against the fields the extension declared
        (kind, range, choices, the studio's upscalers; image fields decoded to PIL, at most `max_pixels`
        each); RequestError names `extension_args.<ext>.<field>`. Extensions that are not loaded are
        left out."""
        if not isinstance(extension_args, Mapping):
            raise RequestError("extension_args", "must be an object keyed by extension name")
        out: dict[str, dict[str, Any]] = {}
        upscalers: list[str] = []  # filled when an "upscaler" field is first checked
        for name, values in extension_args.items():
            ext = self._by_name.get(name)
            if ext is None:
                known = ", ".join(e.name for e in self.loaded) or "none"
                raise RequestError("extension_args", f"unknown extension {name!r} (loaded: {known})")
            if not ext.loaded:
                continue  # reported per job in request_received
            where = f"extension_args.{name}"
            if not isinstance(values, Mapping):
                raise RequestError(where, "must be an object keyed by field name")
            fields = {f.name: f for f in self.ui_fields(name)}
            checked: dict[str, Any] = {}
            for key, value in values.items():
                if isinstance(key, str) and key.startswith("_"):  # the extension's own per-request state
                    checked[key] = value
                    continue
                if key not in fields:
                    raise RequestError(
                        f"{where}.{key}", f"unknown field (known: {', '.join(fields) or 'none'})"
                    )
                f = fields[key]
                if f.kind == UPSCALER_KIND and not upscalers:
                    upscalers = list(self.picture_upscalers())
                names = upscalers if f.kind == UPSCALER_KIND else None
                checked[key] = f.coerce(value, f"{where}.{key}", max_pixels=max_pixels, upscalers=names)
            out[name] = checked
        return out

    def from_alwayson(self, name: str, script_args: Any) -> dict[str, Any] | None:
        """The extension's own reading of A1111 `alwayson_scripts` args (None: it has none). Whatever
        it raises becomes a RequestError under `alwayson_scripts.<name>`."""
        ext = self._by_name.get(name)
        impl = ext.hooks.get("from_alwayson") if ext is not None and ext.loaded else None
        if ext is None or impl is None:
            return None
        where = f"alwayson_scripts.{name}"
        kwargs = {"script_args": script_args, "context": ext.context}
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except RequestError as e:
            raise RequestError(f"{where}.{e.field}", e.message) from e
        except Exception as e:
            reason = summarize(e, ext.manifest.folder if ext.manifest else None)
            raise RequestError(where, f"the extension could not read these arguments: {reason}") from e
        if result is not None and not isinstance(result, Mapping):
            raise RequestError(
                where, f"the extension read them as a {type(result).__name__}, not field values"
            )
        return dict(result) if result is not None else None

    def fields_from_infotext(self, params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """{extension: {field: value}} that the extensions' `infotext_fields` hooks read from a parsed
        infotext: values their fields cannot take (and image fields) are left out; an extension whose
        hook raises or returns something else is logged and left out."""
        out: dict[str, dict[str, Any]] = {}
        for ext in self.loaded:
            impl = ext.hooks.get("infotext_fields")
            if impl is None:
                continue
            kwargs = {"params": dict(params), "context": ext.context}
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as e:
                log.warning("extension %s: infotext_fields failed: %s", ext.name, summarize(e, None))
                continue
            if not isinstance(result, Mapping):
                continue
            fields = {f.name: f for f in self.ui_fields(ext.name) if f.kind not in IMAGE_KINDS}
            values: dict[str, Any] = {}
            for key, value in result.items():
                if key in fields:
                    try:
                        values[key] = fields[key].coerce(value, f"{ext.name}.{key}")
                    except RequestError:
                        continue
            if values:
                out[ext.name] = values
        return out

    def args_for(self, name: str, request: GenerationRequest) -> dict[str, Any]:
        """This extension's field values for the request, defaults filled in."""
        values = {f.name: f.default for f in self.ui_fields(name)}
        given = request.extension_args.get(name) if isinstance(request.extension_args, Mapping) else None
        if isinstance(given, Mapping):
            values.update(given)
        return values

    # ---- extension settings (SettingsSection) ---------------------------------------------------
    def attach_settings(self, get: Callable[[str], Any]) -> None:
        """Read extension settings through `get(key)` (the server's SettingsStore.get: None when unset);
        until then every extension sees its settings' defaults."""
        self._settings_get = get

    def setting_fields(self) -> dict[str, Field]:
        """Every extension setting by its stored key, `<extension name>.<field name>`."""
        return {f"{ext}.{f.name}": f for ext, section in self.settings_sections() for f in section.fields}

    def check_settings(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The extension settings among `changes`, checked against their fields (RequestError naming
        the key); other keys are left out."""
        fields = self.setting_fields()
        return {k: fields[k].coerce(v, k) for k, v in changes.items() if k in fields}

    def settings_for(self, name: str) -> dict[str, Any]:
        """This extension's settings by field name: the stored value, or the default when there is none
        or it is not usable any more (a choice the extension dropped, a number out of its new range)."""
        values: dict[str, Any] = {}
        for ext, section in self.settings_sections():
            if ext != name:
                continue
            for f in section.fields:
                raw = self._settings_get(f"{name}.{f.name}") if self._settings_get is not None else None
                try:
                    values[f.name] = f.default if raw is None else f.coerce(raw, f"{name}.{f.name}")
                except RequestError:
                    values[f.name] = f.default
        return values

    # ---- EngineHooks ---------------------------------------------------------------------------
    def _job(self) -> _Job:
        job: _Job | None = getattr(self._local, "job", None)
        if job is None:
            job = self._local.job = _Job()
        return job

    def _fail(self, ext: Extension, hook: str, reason: str) -> None:
        job = self._job()
        job.failed.add(ext.name)
        line = f"extension {ext.name!r} failed in {hook}: {reason}; it was skipped for the rest of this job"
        job.problems.append(line)
        with self._lock:
            self._last_error[ext.name] = line
        log.warning("%s", line)

    def _call(self, ext: Extension, hook: str, request: GenerationRequest, **kwargs: Any) -> tuple[bool, Any]:
        """(called, result) for one extension's hook, isolated; RequestError from request_received passes."""
        impl = ext.hooks.get(hook)
        if impl is None or ext.name in self._job().failed:
            return False, None
        kwargs.update(
            request=request,
            args=self.args_for(ext.name, request),
            context=ext.context,
            components=self._job().components,
            settings=self.settings_for(ext.name),
        )
        try:
            return True, impl.function(*[kwargs[a] for a in impl.argnames])
        except RequestError:
            if hook in REFUSING_HOOKS:
                raise
            self._fail(ext, hook, "raised RequestError outside request_received")
        except Exception as e:
            from webui.core.devices import is_out_of_memory
            from webui.core.sampling.loop import Stopped

            if isinstance(e, Stopped):  # the job was cancelled during a sub-pass: not the extension's fault
                raise
            if is_out_of_memory(e):  # the job's (its ControlNet, its sub-pass): it fails with the advice
                raise
            self._fail(ext, hook, summarize(e, ext.manifest.folder if ext.manifest else None))
            log.debug("traceback", exc_info=e)
        return False, None

    def request_received(self, request: R) -> R:
        self._local.job = _Job()
        checked = self.check_extension_args(request.extension_args)
        given = request.extension_args
        if any(v is not given[n].get(k) for n, values in checked.items() for k, v in values.items()):
            # hooks see the checked values (images decoded), whoever built the request
            request = dataclasses.replace(request, extension_args={**given, **checked})
        for name in request.extension_args:
            ext = self._by_name[name]
            if not ext.loaded:
                self._job().problems.append(
                    f"extension {name!r} is not loaded ({ext.status}: {ext.error or 'switched off'}); "
                    "its settings were ignored"
                )
        for ext in self.loaded:
            called, result = self._call(ext, "request_received", request)
            if not called or result is None:
                continue
            if type(result) is not type(request):
                self._fail(
                    ext, "request_received", f"returned {type(result).__name__}, not {type(request).__name__}"
                )
                continue
            request = result
        return request

    def step_hooks(self, request: GenerationRequest) -> Sequence[Hook]:
        return [self._step_hook(ext, request) for ext in self.loaded if "on_step" in ext.hooks]

    def _step_hook(self, ext: Extension, request: GenerationRequest) -> Hook:
        def hook(point: HookPoint, state: StepState) -> None:
            latents, pred = state.latents, state.noise_pred
            called, _ = self._call(ext, "on_step", request, point=point, state=state)
            if not called:
                state.latents, state.noise_pred = latents, pred
                return
            for attr, before in (("latents", latents), ("noise_pred", pred)):
                after = getattr(state, attr)
                if before is not None and (after is None or getattr(after, "shape", None) != before.shape):
                    state.latents, state.noise_pred = latents, pred
                    self._fail(
                        ext,
                        f"on_step ({point.value})",
                        f"state.{attr} no longer has shape {tuple(before.shape)}",
                    )
                    return

        return hook

    def offload_on(self, device: str, offloader: Any) -> None:
        """EngineHooks: the extensions' models for `device` wait in RAM, moved there by `offloader`."""
        if self._models is not None:
            self._models.offload_on(device, offloader)

    def model_hooks(self, request: GenerationRequest, components: Components) -> Sequence[ModelHook]:
        self._job().components = JobModel.of(components)
        return [self._model_hook(ext, request) for ext in self.loaded if "before_model" in ext.hooks]

    def sub_pass_hooks(self, request: Img2ImgRequest, components: Components) -> Sequence[ModelHook]:
        """EngineHooks: the model hooks of one sub-request (a detailer's inpaint pass). Only the
        extensions its `extension_args` name act on it: their values are checked as a job's are, their
        `request_received` sees the sub-request (RequestError passes: the sub-pass is refused), and
        their `before_model` runs on its model calls. The job's own state (problems, model) is kept."""
        named = [ext for ext in self.loaded if ext.name in request.extension_args]
        if not named:
            return ()
        checked = self.check_extension_args(request.extension_args)
        request = dataclasses.replace(request, extension_args={**request.extension_args, **checked})
        self._job().components = JobModel.of(components)
        for ext in named:
            called, result = self._call(ext, "request_received", request)
            if called and isinstance(result, type(request)):
                request = result
        return [self._model_hook(ext, request) for ext in named if "before_model" in ext.hooks]

    def _model_hook(self, ext: Extension, request: GenerationRequest) -> ModelHook:
        def hook(point: HookPoint, state: ModelCallState) -> None:
            before = state.inputs
            # the hook works on a copy of the mappings: a failed hook leaves the call as it was
            state.inputs = dataclasses.replace(before, kwargs=dict(before.kwargs), extra=dict(before.extra))
            called, _ = self._call(ext, "before_model", request, state=state)
            if not called:
                state.inputs = before
                return
            after = state.inputs
            problem = None
            if not isinstance(after, type(before)):
                problem = f"state.inputs became a {type(after).__name__}"
            elif getattr(after.sample, "shape", None) != before.sample.shape:
                problem = f"state.inputs.sample no longer has shape {tuple(before.sample.shape)}"
            elif not isinstance(after.extra, Mapping) or not isinstance(after.kwargs, Mapping):
                problem = "state.inputs.extra and .kwargs must stay dicts"
            if problem is not None:
                state.inputs = before
                self._fail(ext, "before_model", problem)

        return hook

    def after_decode(
        self,
        request: GenerationRequest,
        images: list[Image.Image],
        sub_pass: SubPass | None = None,
        info: Sequence[ImageInfo] = (),
    ) -> list[Image.Image]:
        from PIL import Image

        for ext in self.loaded:
            called, result = self._call(
                ext, "after_decode", request, images=list(images), runner=sub_pass, image_info=list(info)
            )
            if not called or result is None:
                continue
            if not isinstance(result, list) or len(result) != len(images):
                self._fail(ext, "after_decode", f"did not return a list of {len(images)} images")
            elif not all(isinstance(i, Image.Image) for i in result):
                self._fail(ext, "after_decode", "returned something that is not a PIL image")
            else:
                images = result
        return images

    def extra_infotext(self, request: GenerationRequest) -> dict[str, object]:
        out: dict[str, object] = {}
        for ext in self.loaded:
            called, result = self._call(ext, "extra_infotext", request)
            if not called or result is None:
                continue
            ok = isinstance(result, Mapping) and all(
                isinstance(k, str) and (v is None or isinstance(v, (str, int, float)))
                for k, v in result.items()
            )
            if not ok:
                self._fail(ext, "extra_infotext", "did not return a dict of text keys to text or numbers")
                continue
            out.update(result)
        return out

    def after_save(self, request: GenerationRequest, image: GeneratedImage) -> None:
        for ext in self.loaded:
            self._call(ext, "after_save", request, image=image)

    def take_problems(self) -> list[str]:
        job = self._job()
        self._local.job = None
        return list(job.problems)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def replace_args(request: R, name: str, **values: Any) -> R:
    """A copy of request whose extension_args[name] has `values` merged in (the original is untouched).

    Use keys starting with "_" for an extension's own per-request state: they are not UI fields and
    are passed through unchecked."""
    args = {k: dict(v) if isinstance(v, Mapping) else v for k, v in request.extension_args.items()}
    args[name] = {**args.get(name, {}), **values}
    return dataclasses.replace(request, extension_args=args)


def _stored_settings(path: Path) -> dict[str, Any]:
    """config.json's keys as stored, read without side effects (the settings store reports and sets
    aside a broken file when the server starts); {} when it is missing or unreadable."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
