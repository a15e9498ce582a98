"""X/Y/Z plot axes: what each axis changes, and the value syntax A1111 users type.

Values are comma-separated (CSV quoting for values with commas: `"a, b", c`). Number axes also take
ranges: `1-5` (every integer), `1-10 (+3)` (a step; `(-2)` counts down), `1-2 [5]` (five evenly spaced
values). Prompt S/R: the first value is searched for in the prompt and negative prompt, and each
value (the first included) replaces it, one column/row per value. Prompt order: every order of the
listed prompt fragments. Size: `512x768` values.

An axis is used on the tabs it applies to (`tabs`); an axis that needs hires fix (`hires`) is refused on
a txt2img request without it, since it would change nothing. A1111 clients name an axis by its index
in A1111 1.10's list for the tab (`A1111_TXT2IMG`, `A1111_IMG2IMG`); an index of an axis we do not
have is refused, naming it.

Extension axes: a type `<extension>.<field>` (e.g. `detailer.ad_denoising_strength`) sets that field of
the request's `extension_args` for the extension, one value per column/row, each checked against the
field the extension declared (the runner's `extension_fields`; a checkbox takes true/false).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webui.plugins.api import (
    GenerationRequest,
    Img2ImgRequest,
    RequestError,
    UnknownSampler,
    resolve_sampler,
    resolve_seed,
)

_RANGE = re.compile(
    r"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)\s*(?:\(\s*([+-]?\d+(?:\.\d*)?)\s*\)|\[\s*(\d+)\s*\])?\s*$"
)
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
MAX_VALUES = 1000
MAX_ORDER_PARTS = 6  # Prompt order: 6 fragments make 720 orders
BOTH = ("txt2img", "img2img")


@dataclass(frozen=True)
class AxisType:
    label: str
    apply: Callable[[GenerationRequest, Any], GenerationRequest]
    number: type | None = None  # int or float for number axes
    show_label: bool = True  # "Steps: 20" rather than "20"
    tabs: tuple[str, ...] = BOTH
    hires: bool = False  # txt2img: only with hires fix (enable_hr)


def _set(name: str) -> Callable[[GenerationRequest, Any], GenerationRequest]:
    return lambda r, v: dataclasses.replace(r, **{name: v})


def _prompt_sr(request: GenerationRequest, pair: Any) -> GenerationRequest:
    search, value = pair
    return dataclasses.replace(
        request,
        prompt=request.prompt.replace(search, value),
        negative_prompt=request.negative_prompt.replace(search, value),
    )


def _prompt_order(request: GenerationRequest, order: Any) -> GenerationRequest:
    """The fragments, found in the prompt in their written order, put back in `order`'s order."""
    found = sorted(order, key=request.prompt.find)
    pieces: list[str] = []
    rest = request.prompt
    for fragment in found:
        at = rest.find(fragment)
        pieces.append(rest[:at])
        rest = rest[at + len(fragment) :]
    prompt = "".join(piece + fragment for piece, fragment in zip(pieces, order, strict=True)) + rest
    return dataclasses.replace(request, prompt=prompt)


def _styles(request: GenerationRequest, name: Any) -> GenerationRequest:
    return dataclasses.replace(request, styles=(*request.styles, name))


def _size(request: GenerationRequest, size: Any) -> GenerationRequest:
    return dataclasses.replace(request, width=size[0], height=size[1])


_RESTORERS = ("CodeFormer", "GFPGAN", "RestoreFormer")
_ON, _OFF = ("true", "yes", "y", "1", "on"), ("false", "no", "n", "0", "off", "none")


def _face_restore(request: GenerationRequest, value: Any) -> GenerationRequest:
    """A1111's "Face restore" axis: a restorer's name turns restoration on with it; true/false turn
    it on (with the request's own restorer) or off."""
    if value in _RESTORERS:
        return dataclasses.replace(request, restore_faces=True, face_restoration_model=value)
    return dataclasses.replace(request, restore_faces=value == "true")


DEFAULT_REFINER_SWITCH = 0.8  # A1111's "Switch at" default, for a refiner axis on a request without one


def _refiner(request: GenerationRequest, name: Any) -> GenerationRequest:
    switch = request.refiner_switch_at if request.refiner_switch_at is not None else DEFAULT_REFINER_SWITCH
    return dataclasses.replace(request, refiner_checkpoint=name, refiner_switch_at=switch)


AXES: dict[str, AxisType] = {
    a.label: a
    for a in (
        AxisType("Nothing", lambda r, v: r, show_label=False),
        AxisType("Seed", _set("seed"), int),
        AxisType("Var. seed", _set("subseed"), int),
        AxisType("Var. strength", _set("subseed_strength"), float),
        AxisType("Steps", _set("steps"), int),
        AxisType("Hires steps", _set("hr_second_pass_steps"), int, tabs=("txt2img",), hires=True),
        AxisType("CFG Scale", _set("cfg_scale"), float),
        AxisType("Distilled CFG Scale", _set("distilled_cfg_scale"), float),
        AxisType("Image CFG Scale", _set("image_cfg_scale"), float, tabs=("img2img",)),  # instruct-pix2pix
        AxisType("Prompt S/R", _prompt_sr, show_label=False),
        AxisType("Prompt order", _prompt_order, show_label=False),
        AxisType("Sampler", _set("sampler_name")),
        AxisType("Hires sampler", _set("hr_sampler_name"), tabs=("txt2img",), hires=True),
        AxisType("Checkpoint name", _set("checkpoint"), show_label=False),
        AxisType("Sigma Churn", _set("s_churn"), float),
        AxisType("Sigma min", _set("s_tmin"), float),
        AxisType("Sigma max", _set("s_tmax"), float),
        AxisType("Sigma noise", _set("s_noise"), float),
        AxisType("Schedule type", _set("scheduler")),
        AxisType("Eta", _set("eta"), float),
        AxisType("Clip skip", _set("clip_skip"), int),
        AxisType(
            "Denoising", _set("denoising_strength"), float, hires=True
        ),  # txt2img: the hires pass's denoising
        AxisType("Initial noise multiplier", _set("initial_noise_multiplier"), float, tabs=("img2img",)),
        AxisType("Hires upscaler", _set("hr_upscaler"), tabs=("txt2img",), hires=True),
        AxisType("VAE", _set("vae")),
        AxisType("Styles", _styles),
        AxisType("Face restore", _face_restore),
        AxisType("Refiner checkpoint", _refiner, show_label=False),
        AxisType("Refiner switch at", _set("refiner_switch_at"), float),
        AxisType("Size", _size),
    )
}

# A1111 1.10's axis lists (its `axis_options` filtered for each tab): an index in script_args means these.
_A1111_COMMON_HEAD = ("Nothing", "Seed", "Var. seed", "Var. strength", "Steps")
_A1111_TAIL = (
    "Checkpoint name", "Negative Guidance minimum sigma", "Sigma Churn", "Sigma min", "Sigma max",
    "Sigma noise", "Schedule type", "Schedule min sigma", "Schedule max sigma", "Schedule rho",
    "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip", "Denoising", "Initial noise multiplier",
    "Extra noise",
)  # fmt: skip
_A1111_END = (
    "VAE", "Styles", "UniPC Order", "Face restore", "Token merging ratio", "Token merging ratio high-res",
    "Always discard next-to-last sigma", "SGM noise multiplier", "Refiner checkpoint", "Refiner switch at",
    "RNG source", "FP8 mode", "Size",
)  # fmt: skip
A1111_TXT2IMG = (
    *_A1111_COMMON_HEAD, "Hires steps", "CFG Scale", "Prompt S/R", "Prompt order", "Sampler", "Hires sampler",
    *_A1111_TAIL, "Hires upscaler", *_A1111_END,
)  # fmt: skip
A1111_IMG2IMG = (
    *_A1111_COMMON_HEAD, "CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order", "Sampler",
    *_A1111_TAIL, "Cond. Image Mask Weight", *_A1111_END,
)  # fmt: skip


def _extension_field(value: str, fields: Any) -> tuple[str, Any] | None:
    ext, _, name = value.partition(".")
    for f in (fields or {}).get(ext, ()):
        if f.name == name and f.kind not in ("image", "mask"):
            return ext, f
    return None


def extension_axis(kind: str, fields: Any) -> AxisType | None:
    """The axis for `<extension>.<field>`, when the runner's extensions declare that field."""
    found = _extension_field(kind, fields)
    if found is None:
        return None
    ext, f = found

    def apply(request: GenerationRequest, value: Any) -> GenerationRequest:
        args = {**request.extension_args, ext: {**request.extension_args.get(ext, {}), f.name: value}}
        return dataclasses.replace(request, extension_args=args)

    return AxisType(kind, apply)


def tab_of(request: GenerationRequest) -> str:
    return "img2img" if isinstance(request, Img2ImgRequest) else "txt2img"


def axis_kind(value: Any, request: GenerationRequest, field: str, extension_fields: Any = None) -> str:
    """The axis label for a type given by label (any case), by A1111's index for the request's tab, or
    as `<extension>.<field>` of the runner's extensions."""
    tab = tab_of(request)
    if isinstance(value, bool) or value is None:
        raise RequestError(field, f"must be an axis name or A1111's axis index, got {value!r}")
    if isinstance(value, int):
        listed = A1111_TXT2IMG if tab == "txt2img" else A1111_IMG2IMG
        if not 0 <= value < len(listed):
            raise RequestError(field, f"A1111's {tab} axis index must be 0 to {len(listed) - 1}, got {value}")
        value = listed[value]
    by_case = {k.casefold(): k for k in AXES}
    kind = by_case.get(str(value).strip().casefold())
    if kind is None and extension_axis(str(value).strip(), extension_fields) is not None:
        return str(value).strip()
    if kind is None:
        usable = ", ".join(k for k, a in AXES.items() if tab in a.tabs)
        raise RequestError(
            field, f"the axis {value!r} is not available here; choose from {usable}, or <extension>.<field>"
        )
    axis = AXES[kind]
    if tab not in axis.tabs:
        raise RequestError(field, f"{kind!r} applies to {' and '.join(axis.tabs)} only")
    if axis.hires and tab == "txt2img" and not getattr(request, "enable_hr", False):
        raise RequestError(field, f"{kind!r} changes nothing without hires fix: turn on enable_hr")
    return kind


def split_values(text: str) -> list[str]:
    rows = list(csv.reader([text], skipinitialspace=True)) if text.strip() else [[]]
    return [v.strip() for v in rows[0] if v.strip()]


def _numbers(item: str, kind: type, field: str) -> list[Any]:
    m = _RANGE.match(item)
    if m and not (kind is int and "." in item):
        start, end = kind(float(m.group(1))), kind(float(m.group(2)))
        if m.group(4):  # [count]: evenly spaced
            n = int(m.group(4))
            if n < 1:
                raise RequestError(field, f"{item!r}: the count must be at least 1")
            if n > MAX_VALUES:
                raise RequestError(field, f"{item!r} makes {n} values (limit {MAX_VALUES} an axis)")
            values = [start + (end - start) * i / max(n - 1, 1) for i in range(n)]
            return [kind(round(v)) if kind is int else round(v, 6) for v in values]
        step = kind(float(m.group(3))) if m.group(3) else kind(1 if end >= start else -1)
        if step == 0 or (end - start) * step < 0:
            raise RequestError(field, f"{item!r}: the step {step} never reaches {end}")
        count = int((end - start) / step + 1e-9) + 1
        if count > MAX_VALUES:
            raise RequestError(field, f"{item!r} makes {count} values (limit {MAX_VALUES} an axis)")
        return [round(start + i * step, 6) if kind is float else start + i * step for i in range(count)]
    try:
        return [kind(item) if kind is int else float(item)]
    except ValueError:
        raise RequestError(
            field, f"{item!r} is not a {'whole ' if kind is int else ''}number or range"
        ) from None


def parse_values(
    kind: str,
    text: str | list[str],
    request: GenerationRequest,
    field: str,
    samplers: Any = None,
    *,
    fixed_seeds: bool = True,
    extension_fields: Any = None,
) -> list[Any]:
    """The axis values (checked); RequestError names `field` for anything it cannot use. `text` is the
    typed values, or a list of them (A1111's dropdown). With `fixed_seeds` off ("Keep -1 for seeds"),
    a seed of -1 stays -1: every cell draws its own random seed."""
    found = _extension_field(kind, extension_fields) if kind not in AXES else None
    if kind not in AXES and found is None:
        raise RequestError(
            field.replace("values", "type"), f"unknown axis {kind!r}; choose from {', '.join(AXES)}"
        )
    if found is not None:
        return _extension_values(found[1], text, field)
    axis = AXES[kind]
    if kind == "Nothing":
        return [None]
    items = [str(v).strip() for v in text if str(v).strip()] if isinstance(text, list) else split_values(text)
    if not items:
        raise RequestError(field, f"give at least one value for {kind}")
    if len(items) > MAX_VALUES:
        raise RequestError(field, f"{len(items)} values (limit {MAX_VALUES} an axis)")
    values: list[Any] = []
    for item in items:
        values += _numbers(item, axis.number, field) if axis.number else [item]
        if len(values) > MAX_VALUES:
            raise RequestError(field, f"more than {MAX_VALUES} values (limit {MAX_VALUES} an axis)")
    return _checked(kind, values, request, field, samplers, fixed_seeds)


def _extension_values(f: Any, text: str | list[str], field: str) -> list[Any]:
    items = [str(v).strip() for v in text] if isinstance(text, list) else split_values(text)
    if not items:
        raise RequestError(field, f"give at least one value for {f.name}")
    if len(items) > MAX_VALUES:
        raise RequestError(field, f"{len(items)} values (limit {MAX_VALUES} an axis)")
    values: list[Any] = []
    for item in items:
        value: Any = item
        if f.kind == "checkbox":
            if item.casefold() not in ("true", "false"):
                raise RequestError(field, f"{item!r}: {f.name} takes true or false")
            value = item.casefold() == "true"
        elif f.kind in ("slider", "number"):
            numbers = _numbers(item, int if isinstance(f.default, int) else float, field)
            values += [f.coerce(v, field) for v in numbers]
            continue
        values.append(f.coerce(value, field))
    return values


def _checked(
    kind: str, values: list[Any], request: GenerationRequest, field: str, samplers: Any, fixed_seeds: bool
) -> list[Any]:
    if kind in ("Seed", "Var. seed"):
        return [resolve_seed(v, field=field) if fixed_seeds or v != -1 else -1 for v in values]
    if kind in ("Sampler", "Hires sampler"):
        for v in values:
            try:
                samplers.resolve(v) if samplers is not None else resolve_sampler(v)
            except UnknownSampler as e:
                raise RequestError(field, str(e)) from e
    elif kind == "Prompt S/R":
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise RequestError(field, f"{search!r} (the first value) is not in the prompt or negative prompt")
        return [(search, v) for v in values]
    elif kind == "Prompt order":
        missing = [v for v in values if v not in request.prompt]
        if missing:
            raise RequestError(field, f"{missing[0]!r} is not in the prompt")
        if len(values) > MAX_ORDER_PARTS:
            raise RequestError(
                field,
                f"{len(values)} fragments make {math.factorial(len(values))} orders "
                f"(limit {MAX_ORDER_PARTS} fragments)",
            )
        return list(itertools.permutations(values))
    elif kind == "Face restore":
        out = []
        for v in values:
            named = {r.casefold(): r for r in _RESTORERS}.get(v.casefold())
            if named is None and v.casefold() not in (*_ON, *_OFF):
                raise RequestError(field, f"{v!r}: Face restore takes {', '.join(_RESTORERS)}, true or false")
            out.append(named or ("true" if v.casefold() in _ON else "false"))
        return out
    elif kind == "Refiner switch at":
        if request.refiner is None:
            raise RequestError(field, "'Refiner switch at' changes nothing without a refiner checkpoint")
        bad = [v for v in values if not 0 < v <= 1]
        if bad:
            raise RequestError(
                field, f"{bad[0]}: the switch is a fraction of the steps, above 0 and at most 1"
            )
    elif kind == "Size":
        sizes = []
        for v in values:
            m = _SIZE.match(v)
            if m is None:
                raise RequestError(field, f"{v!r} is not a size; write WIDTHxHEIGHT, e.g. 512x768")
            sizes.append((int(m.group(1)), int(m.group(2))))
        return sizes
    return values


def label(kind: str, value: Any) -> str:
    if kind == "Nothing":
        return ""
    if kind not in AXES:  # an extension axis
        return f"{kind}: {f'{value:g}' if isinstance(value, float) else value}"
    shown = value
    if kind == "Prompt S/R":
        shown = value[1]
    elif kind == "Prompt order":
        shown = ", ".join(value)
    elif kind == "Size":
        shown = f"{value[0]}x{value[1]}"
    if isinstance(shown, float):
        shown = f"{shown:g}"
    if kind in ("Seed", "Var. seed") and shown == -1:
        shown = "-1 (random)"
    return f"{kind}: {shown}" if AXES[kind].show_label else str(shown)
