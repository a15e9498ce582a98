"""What an extension registers: plain, frozen data the UI, the server and the engine read.

An extension never builds widgets or routes itself. It describes them (`UiSection` with `Field`s, a
`SettingsSection`, an `UpscalerSpec`, a `SamplerSpec`, a `RouteSpec`, a `ScriptSpec`) and the layer that
owns the thing renders or mounts it. A UiSection's values come back to the extension's hooks by name:
`request.extension_args[<extension name>][<field name>]` (missing ones filled from the defaults).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.types import MAX_INIT_PIXELS, GenerationRequest, GenerationResult, RequestError

IMAGE_KINDS = ("image", "mask")  # plugin API 2: a PIL image (RGB) / mask ("L", white = the area), or None
UPSCALER_KIND = "upscaler"  # plugin API 2.4: one of the studio's picture upscalers, by name ("None": none)
FIELD_KINDS = (
    "checkbox", "slider", "number", "text", "textarea", "dropdown", "radio", *IMAGE_KINDS, UPSCALER_KIND,
)  # fmt: skip
TABS = ("txt2img", "img2img")  # the Extras tab runs no generation hooks, so it takes no sections
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_TEXT = 100_000
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^file:", re.ASCII)

Runner = Callable[[GenerationRequest], GenerationResult]
"""Runs one request to completion (Engine.run, or the job queue's equivalent). The queue's runner (what
a ScriptSpec's `run` gets) also has `samplers`, the engine's sampler catalog:
`runner.samplers.resolve(name)` accepts extension samplers too (raises UnknownSampler); and (API 2.4)
`upscalers`, the studio's picture upscalers by name, `runner.upscalers[name](image, width, height)` ->
the image at exactly that size: Lanczos, Nearest, then the extensions' UpscalerSpecs, the list Extras
offers ("None" is not in it). A plain callable (Engine.run) may have neither: use getattr."""


@dataclass(frozen=True)
class Field:
    """One named input. `kind` is one of FIELD_KINDS; `choices` for dropdown/radio; bounds for numbers.

    An "image" or "mask" field (default None) is an image drop in the UI and base64 (plain or a
    `data:image/...;base64,` URL) in API arguments, like A1111's; hooks always get a PIL image (8-bit
    RGB, or "L" for a mask, orientation applied, size limits checked) or None.

    `group` (API 2.1): the fields of a UiSection that share a group are drawn together in a tab of that
    name inside the accordion (sd-webui-controlnet's "ControlNet Unit 0", "ControlNet Unit 1", ...);
    ungrouped fields come first, above the tabs. Values are still keyed by field name.

    An "upscaler" field (API 2.4; default "None") picks one of the studio's picture upscalers: a
    dropdown of "None", Lanczos, Nearest and the extensions' upscalers in the UI, the name in the API;
    an extension's UiSection values are checked against that list (a script checks its own, e.g. with
    `runner.upscalers`). It takes no `choices`: the list is the live one.
    """

    name: str
    kind: str
    default: Any
    label: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"field name {self.name!r}: use letters, digits and _, starting with a letter")
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {', '.join(FIELD_KINDS)}")
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.kind in ("dropdown", "radio") and not self.choices:
            raise ValueError(f"field {self.name!r}: a {self.kind} needs choices")
        if self.kind == UPSCALER_KIND and self.choices:
            raise ValueError(
                f"field {self.name!r}: an upscaler field lists the studio's upscalers, not choices"
            )
        if self.kind in IMAGE_KINDS and self.default is not None:
            raise ValueError(f"field {self.name!r}: an {self.kind} field's default must be None")
        self.coerce(self.default, f"default of {self.name}", error=ValueError)

    def coerce(
        self,
        value: Any,
        where: str,
        error: type[Exception] = RequestError,
        max_pixels: int = MAX_INIT_PIXELS,
        upscalers: Collection[str] | None = None,
    ) -> Any:
        """The value checked against the kind; images decoded (base64) and sanitised. Raises naming
        `where`; `max_pixels` bounds an image's size (checked before its pixels are decoded);
        `upscalers` are the names an "upscaler" field takes besides "None" (None: any text)."""

        def bad(message: str) -> Exception:
            return RequestError(where, message) if error is RequestError else error(f"{where}: {message}")

        if self.kind in IMAGE_KINDS:
            return None if value is None else field_image(value, self.kind, where, max_pixels)

        if self.kind == "checkbox":
            if not isinstance(value, bool):
                raise bad(f"must be true or false, got {value!r}")
            return value
        if self.kind in ("slider", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(f"must be a finite number, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise bad(f"must be at least {self.minimum:g}, got {value:g}")
            if self.maximum is not None and value > self.maximum:
                raise bad(f"must be at most {self.maximum:g}, got {value:g}")
            return value
        if not isinstance(value, str):
            raise bad(f"must be text, got {type(value).__name__}")
        if len(value) > MAX_TEXT:
            raise bad(f"is {len(value)} characters long (limit {MAX_TEXT})")
        if self.kind in ("dropdown", "radio") and value not in self.choices:
            raise bad(f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
        if (
            self.kind == UPSCALER_KIND
            and upscalers is not None
            and value != "None"
            and value not in upscalers
        ):
            raise bad(f"unknown upscaler {value!r}: available are {', '.join(['None', *upscalers])}")
        return value


def field_image(value: Any, kind: str, where: str, max_pixels: int = MAX_INIT_PIXELS) -> Any:
    """An image field's value as a PIL image: base64 (plain or a data: URL) decoded with the engine's
    safe decoder, or a PIL image; RGB for "image", "L" for "mask". RequestError(where) otherwise."""
    from PIL import Image

    from webui.core.tasks.input_images import decode_base64, sanitize_image, sanitize_mask

    if isinstance(value, str):
        if URL_PATTERN.match(value.strip()):
            raise RequestError(where, "image URLs are not accepted; send the image itself, base64-encoded")
        value = decode_base64(value.strip(), where, max_pixels=max_pixels)
    if not isinstance(value, Image.Image):
        raise RequestError(where, f"must be a base64-encoded image, got {type(value).__name__}")
    if kind == "mask":
        return sanitize_mask(value, value.size, where, max_pixels=max_pixels)
    return sanitize_image(value, where, max_pixels=max_pixels)


def _fields(owner: str, fields: Sequence[Field]) -> tuple[Field, ...]:
    out = tuple(fields)
    names = [f.name for f in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{owner}: field names must be unique, repeated: {', '.join(dupes)}")
    return out


@dataclass(frozen=True)
class UiSection:
    """An accordion on one or more tabs ("txt2img", "img2img": the img2img and Inpaint tabs).

    `preview` (API 2), when given, adds a Preview button and picture to the accordion:
    `preview(values)` gets the section's field values by name (checked, images as PIL) and returns a
    PIL image to show (a ControlNet's preprocessed map); RequestError(field, message) is shown to the
    user as a warning. With field groups (API 2.1) each group's tab has its own button, and `values`
    are that group's fields and the ungrouped ones."""

    tab: str | tuple[str, ...]
    title: str
    fields: tuple[Field, ...] = ()
    open: bool = False
    preview: Callable[[Mapping[str, Any]], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        tabs = (self.tab,) if isinstance(self.tab, str) else tuple(self.tab)
        unknown = [t for t in tabs if t not in TABS]
        if not tabs or unknown:
            raise ValueError(
                f"UiSection {self.title!r}: tab must be among {', '.join(TABS)}, got {self.tab!r}"
            )
        object.__setattr__(self, "tab", tabs)
        object.__setattr__(self, "fields", _fields(f"UiSection {self.title!r}", self.fields))

    @property
    def tabs(self) -> tuple[str, ...]:
        return self.tab if isinstance(self.tab, tuple) else (self.tab,)


@dataclass(frozen=True)
class SettingsSection:
    """A group on the Settings tab; values are stored with the other settings (config.json, also
    /sdapi/v1/options) as `<extension name>.<field name>` keys, and reach every hook as `settings`."""

    title: str
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _fields(f"SettingsSection {self.title!r}", self.fields))
        pictures = [f.name for f in self.fields if f.kind in IMAGE_KINDS]
        if pictures:
            raise ValueError(
                f"SettingsSection {self.title!r}: settings cannot be images ({', '.join(pictures)})"
            )


@dataclass(frozen=True)
class UpscalerSpec:
    """An image upscaler for hires fix and the Extras tab.

    `upscale(image, width, height)` returns the image at exactly width x height. `scale` is the model's
    native factor (informative: a 4x model resizes its output down when asked for 2x).
    """

    name: str
    upscale: Callable[[Any, int, int], Any]
    scale: float = 4.0
    path: Path | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: `make_scheduler(scheduler_config)` returns a fresh diffusers-style scheduler."""

    name: str
    make_scheduler: Callable[[Mapping[str, Any]], Any]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteSpec:
    """An HTTP route (a FastAPI endpoint: parameters by name, a JSON-able return), mounted by the server
    at /api/v1/extensions/<extension name><path>; the login and the other guards apply as to every route.

    `root` mounts it at `path` itself, for an A1111 extension's own API that clients call by its path
    (`/controlnet/version`): only when the A1111 API is on (--api), and only under /<extension name>/.
    """

    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)
    summary: str = ""
    root: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or ".." in self.path:
            raise ValueError(f"route path {self.path!r} must start with / and not contain ..")
        if isinstance(self.methods, (list, str)):
            object.__setattr__(
                self, "methods", (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
            )


@dataclass(frozen=True)
class ScriptSpec:
    """A selectable script (A1111's `script_name`): it runs the whole job itself through `runner`.

    `run(runner, request, args)` receives the request and its own field values by name, and returns
    what it made (for X/Y/Z plot: the grid and every cell's result).
    """

    name: str
    run: Callable[[Runner, GenerationRequest, Mapping[str, Any]], Any]
    fields: tuple[Field, ...] = ()
    tabs: tuple[str, ...] = ("txt2img", "img2img")

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _fields(f"script {self.name!r}", self.fields))


Descriptor = UiSection | SettingsSection | UpscalerSpec | SamplerSpec | RouteSpec | ScriptSpec


@dataclass(frozen=True)
class ExtensionContext:
    """What an extension may know about where it runs: its folder, the user's data and the device, and
    (API 2) `models`, an ExtensionModels that loads and caches its own models from `models_dir`."""

    name: str
    folder: Path | None
    data_dir: Path
    models_dir: Path
    outputs_dir: Path
    device: str = "cpu"
    models: Any = field(default=None, compare=False, repr=False)  # webui.plugins.ext_models.ExtensionModels


@dataclass
class Registry:
    """Collects one extension's descriptors during its `register` hook."""

    extension: str
    items: list[Descriptor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, item: Descriptor) -> Descriptor:
        if not isinstance(item, Descriptor):  # type: ignore[arg-type, misc]
            raise TypeError(
                f"cannot register a {type(item).__name__}; use the descriptors in webui.plugins.api"
            )
        if isinstance(item, UiSection):
            taken = {f.name for s in self.items if isinstance(s, UiSection) for f in s.fields}
            clash = sorted(taken & {f.name for f in item.fields})
            if clash:
                raise ValueError(f"{self.extension}: UI field names already used: {', '.join(clash)}")
        self.items.append(item)
        return item

    def note(self, message: str) -> None:
        """Something the user should know (shown in the Extensions list), e.g. a model it cannot load."""
        self.notes.append(message)

    def ui_fields(self) -> tuple[Field, ...]:
        return tuple(f for s in self.items if isinstance(s, UiSection) for f in s.fields)
