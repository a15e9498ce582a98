"""UI defaults in `ui-config.json` (beside config.json), with AUTOMATIC1111's key format.

Each key is `<tab>/<label>/<field>`, the field one of value, minimum, maximum, step, visible:

    {"txt2img/Sampling steps/value": 30, "txt2img/Width/maximum": 1024, "img2img/Seed/visible": true}

The UI describes its controls to this module as plain data (`Control`); `parse` checks every key against
them and returns the usable entries plus one line per key it cannot use (unknown control, unknown field,
a value of the wrong type or outside the range): those are logged and shown in Settings, never fatal.
A file that cannot be read at all gives no defaults and one problem line.

`save_values` writes the controls' current values ("Set current values as defaults"): it reads the file
again, changes only the `/value` keys of the controls given (adding their range keys when the file has
none, as A1111 does), keeps every other key as it was, and replaces the file atomically.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.atomic import write_atomic

log = logging.getLogger("sfumato.ui_defaults")

FILE_NAME = "ui-config.json"
FIELDS = ("value", "minimum", "maximum", "step", "visible")
KINDS = ("slider", "number", "checkbox", "text", "choice", "multichoice")
MAX_FILE_BYTES = 4 << 20  # a larger file is not a UI config


@dataclass(frozen=True)
class Control:
    """One control the UI offers defaults for: `key` is `<tab>/<label>`."""

    key: str
    kind: str  # one of KINDS
    value: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    visible: bool = True
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class UiDefaults:
    """What a ui-config.json gives: {control key: {field: value}} and the keys it could not use."""

    fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def read_raw(path: Path) -> tuple[dict[str, Any], str | None]:
    """The file's JSON object ({} when missing) and None, or {} and why it cannot be used."""
    try:
        data = Path(path).read_bytes()
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        raw = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return {}, f"{path} cannot be read ({type(e).__name__}: {e}); no UI defaults are used"
    if not isinstance(raw, dict):
        return {}, f"{path}: expected a JSON object of keys and values; no UI defaults are used"
    return raw, None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _end(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}"


def _check_range(control: Control, got: Mapping[str, Any]) -> str | None:
    lo, hi = got.get("minimum", control.minimum), got.get("maximum", control.maximum)
    if lo is not None and hi is not None and lo >= hi:
        return f"minimum {lo:g} is not below maximum {hi:g}"
    return None


def check_value(control: Control, value: Any, lo: float | None = None, hi: float | None = None) -> str | None:
    """Why `value` cannot be this control's value (None when it can); lo/hi: the range in use."""
    kind = control.kind
    if kind in ("slider", "number"):
        if not _number(value):
            return f"must be a number, got {value!r}"
        lo = control.minimum if lo is None else lo
        hi = control.maximum if hi is None else hi
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"{value:g} is outside {_end(lo)}..{_end(hi)}"
        return None
    if kind == "checkbox":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind == "text":
        return None if isinstance(value, str) else f"must be text, got {value!r}"
    if kind == "choice":
        if control.choices is not None and value not in control.choices:
            return f"{value!r} is not one of the choices"
        return None if isinstance(value, str) else f"must be text, got {value!r}"
    if kind == "multichoice":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"must be a list of text, got {value!r}"
        bad = [v for v in value if control.choices is not None and v not in control.choices]
        return f"{bad!r} are not among the choices" if bad else None
    return f"control kind {kind!r} takes no defaults"


def _check_field(control: Control, name: str, value: Any) -> str | None:
    if name == "visible":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if name in ("minimum", "maximum", "step"):
        if control.kind not in ("slider", "number"):
            return f"the {control.kind} control has no {name}"
        if not _number(value):
            return f"must be a number, got {value!r}"
        if name == "step" and value <= 0:
            return f"must be above 0, got {value!r}"
    return None


def parse(raw: Mapping[str, Any], controls: Iterable[Control]) -> UiDefaults:
    """The usable defaults among `raw`'s keys for `controls`, and a line for each key that is not."""
    by_key = {c.key: c for c in controls}
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        where, _, name = str(key).rpartition("/")
        control = by_key.get(where)
        if name not in FIELDS or control is None:
            problems.append(f"{key}: no such control here" if name in FIELDS else f"{key}: unknown field")
            continue
        why = _check_field(control, name, value)
        if why is not None:
            problems.append(f"{key}: {why}")
            continue
        found.setdefault(where, {})[name] = value
    out: dict[str, dict[str, Any]] = {}
    for where, got in found.items():
        control = by_key[where]
        why = _check_range(control, got)
        if why is not None:
            problems.append(f"{where}: {why}; its minimum and maximum are not used")
            got = {k: v for k, v in got.items() if k not in ("minimum", "maximum")}
        if "value" in got:
            why = check_value(control, got["value"], got.get("minimum"), got.get("maximum"))
            if why is not None:
                problems.append(f"{where}/value: {why}")
                del got["value"]
        if got:
            out[where] = got
    return UiDefaults(out, tuple(problems))


def load(path: Path, controls: Iterable[Control]) -> UiDefaults:
    """Read and check ui-config.json (missing: no defaults); every problem is logged once."""
    raw, problem = read_raw(path)
    found = parse(raw, controls) if problem is None else UiDefaults(problems=(problem,))
    if found.problems:
        log.warning("%s: %d key(s) not used: %s", path, len(found.problems), "; ".join(found.problems[:20]))
    return found


def save_values(path: Path, controls: Iterable[Control], values: Mapping[str, Any]) -> tuple[int, list[str]]:
    """Write `values` ({control key: value}) as the controls' defaults; returns (how many were written,
    a line per value that was not: unknown control or a value it cannot take). The file is read again
    first and keeps every other key; a file that cannot be read is refused (OSError), never replaced."""
    raw, problem = read_raw(path)
    if problem is not None:
        raise OSError(problem.replace("no UI defaults are used", "fix or remove it first; nothing saved"))
    by_key = {c.key: c for c in controls}
    skipped: list[str] = []
    written = 0
    for key, value in values.items():
        control = by_key.get(key)
        if control is None:
            skipped.append(f"{key}: no such control")
            continue
        lo, hi = raw.get(f"{key}/minimum"), raw.get(f"{key}/maximum")
        why = check_value(control, value, lo if _number(lo) else None, hi if _number(hi) else None)
        if why is not None:
            skipped.append(f"{key}: {why}")
            continue
        raw[f"{key}/value"] = value
        for name in ("visible", "minimum", "maximum", "step"):
            own = control.visible if name == "visible" else getattr(control, name)
            if own is not None and f"{key}/{name}" not in raw:
                raw[f"{key}/{name}"] = own
        written += 1
    text = json.dumps(raw, indent=4, ensure_ascii=False, allow_nan=False)
    write_atomic(Path(path), text.encode("utf-8"))
    return written, skipped
