"""X/Y/Z plot axes: what each axis changes, and the value syntax A1111 users type.

Values are comma-separated (CSV quoting for values with commas: `"a, b", c`). Number axes also take
ranges: `1-5` (every integer), `1-10 (+3)` (a step; `(-2)` counts down), `1-2 [5]` (five evenly spaced
values). Prompt S/R: the first value is searched for in the prompt and negative prompt, and each
value (the first included) replaces it, one column/row per value.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webui.plugins.api import GenerationRequest, RequestError, UnknownSampler, resolve_sampler, resolve_seed

_RANGE = re.compile(
    r"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)\s*(?:\(\s*([+-]?\d+(?:\.\d*)?)\s*\)|\[\s*(\d+)\s*\])?\s*$"
)
MAX_VALUES = 1000


@dataclass(frozen=True)
class AxisType:
    label: str
    apply: Callable[[GenerationRequest, Any], GenerationRequest]
    number: type | None = None  # int or float for number axes
    show_label: bool = True  # "Steps: 20" rather than "20"


def _set(name: str) -> Callable[[GenerationRequest, Any], GenerationRequest]:
    return lambda r, v: dataclasses.replace(r, **{name: v})


def _prompt_sr(request: GenerationRequest, pair: Any) -> GenerationRequest:
    search, value = pair
    return dataclasses.replace(
        request,
        prompt=request.prompt.replace(search, value),
        negative_prompt=request.negative_prompt.replace(search, value),
    )


AXES: dict[str, AxisType] = {
    a.label: a
    for a in (
        AxisType("Nothing", lambda r, v: r, show_label=False),
        AxisType("Seed", _set("seed"), int),
        AxisType("Steps", _set("steps"), int),
        AxisType("CFG Scale", _set("cfg_scale"), float),
        AxisType("Sampler", _set("sampler_name")),
        AxisType("Checkpoint name", _set("checkpoint"), show_label=False),
        AxisType("Prompt S/R", _prompt_sr, show_label=False),
    )
}


def _split(text: str) -> list[str]:
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
            values = [start + (end - start) * i / max(n - 1, 1) for i in range(n)]
            return [kind(round(v)) if kind is int else round(v, 6) for v in values]
        step = kind(float(m.group(3))) if m.group(3) else kind(1 if end >= start else -1)
        if step == 0 or (end - start) * step < 0:
            raise RequestError(field, f"{item!r}: the step {step} never reaches {end}")
        count = int((end - start) / step + 1e-9) + 1
        if count > MAX_VALUES:
            raise RequestError(field, f"{item!r} makes {count} values (limit {MAX_VALUES})")
        return [round(start + i * step, 6) if kind is float else start + i * step for i in range(count)]
    try:
        return [kind(item) if kind is int else float(item)]
    except ValueError:
        raise RequestError(
            field, f"{item!r} is not a {'whole ' if kind is int else ''}number or range"
        ) from None


def parse_values(
    kind: str, text: str, request: GenerationRequest, field: str, samplers: Any = None
) -> list[Any]:
    """The axis values (checked); RequestError names `field` for anything it cannot use."""
    if kind not in AXES:
        raise RequestError(
            field.replace("values", "type"), f"unknown axis {kind!r}; choose from {', '.join(AXES)}"
        )
    axis = AXES[kind]
    if kind == "Nothing":
        return [None]
    items = _split(text)
    if not items:
        raise RequestError(field, f"give at least one value for {kind}")
    values: list[Any] = []
    for item in items:
        values += _numbers(item, axis.number, field) if axis.number else [item]
    if len(values) > MAX_VALUES:
        raise RequestError(field, f"{len(values)} values (limit {MAX_VALUES})")
    if kind == "Seed":
        values = [resolve_seed(v, field=field) for v in values]  # -1: a random seed, recorded
    elif kind == "Sampler":
        for v in values:
            try:
                samplers.resolve(v) if samplers is not None else resolve_sampler(v)
            except UnknownSampler as e:
                raise RequestError(field, str(e)) from e
    elif kind == "Prompt S/R":
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise RequestError(field, f"{search!r} (the first value) is not in the prompt or negative prompt")
        values = [(search, v) for v in values]
    return values


def label(kind: str, value: Any) -> str:
    if kind == "Nothing":
        return ""
    shown = value[1] if kind == "Prompt S/R" else value
    if isinstance(shown, float):
        shown = f"{shown:g}"
    return f"{kind}: {shown}" if AXES[kind].show_label else str(shown)
