"""The files beside a model: a preview picture and A1111's user-metadata sidecar `name.json`.

- Preview: `name.preview.png` (A1111's extra-networks name), else `name.png`; .jpg, .jpeg, .webp and .gif
  are taken too, in that order of preference.
- Sidecar `name.json`: the keys A1111's "Edit metadata" dialog writes (`description`, `sd version`,
  `activation text`, `preferred weight`, `negative text`, `notes`). Keys we do not know (other tools
  write more) are kept as they are on every save. Writes are atomic (webui.core.atomic).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from webui.core.atomic import write_atomic
from webui.core.types import RequestError

PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
TEXT_KEYS = ("description", "sd version", "activation text", "negative text", "notes")
WEIGHT_KEY = "preferred weight"
USER_KEYS = (*TEXT_KEYS, WEIGHT_KEY)
MAX_TEXT = 20_000  # characters per text field
MAX_SIDECAR_BYTES = 1 << 20  # a bigger name.json is not read (not a hand-written note)


def preview_and_sidecar(stem: str, names: set[str]) -> tuple[str | None, str | None]:
    """The preview's and the sidecar's file names for a model named `stem`, among a folder's `names`."""
    preview = next(
        (
            cand
            for ext in PREVIEW_EXTENSIONS
            for cand in (f"{stem}.preview{ext}", f"{stem}{ext}")
            if cand in names
        ),
        None,
    )
    sidecar = f"{stem}.json" if f"{stem}.json" in names else None
    return preview, sidecar


def previews_in(names: frozenset[str] | set[str]) -> dict[str, str]:
    """{model stem: its preview's file name} for every picture among a folder's `names`, by the same
    preference as preview_and_sidecar (one pass over the folder, for scans of many files)."""
    ranked: dict[str, tuple[int, str]] = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext not in PREVIEW_EXTENSIONS:
            continue
        order = PREVIEW_EXTENSIONS.index(ext) * 2
        if stem.endswith(".preview"):
            stem = stem[: -len(".preview")]
        else:
            order += 1
        if stem not in ranked or order < ranked[stem][0]:
            ranked[stem] = (order, name)
    return {stem: name for stem, (_, name) in ranked.items()}


def sidecar_path(model: Path) -> Path:
    """Where `model`'s sidecar is (or would be written): the same folder, the stem plus `.json`."""
    stem = model.name if model.is_dir() else model.stem
    return model.parent / f"{stem}.json"


def read_sidecar(path: Path | None) -> dict[str, Any]:
    """The sidecar's object; {} when there is none or it cannot be read as a JSON object."""
    if path is None:
        return {}
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def user_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The A1111 keys of a sidecar, with the types the editor shows ("" and None when absent)."""
    out: dict[str, Any] = {k: str(data.get(k) or "") for k in TEXT_KEYS}
    weight = data.get(WEIGHT_KEY)
    out[WEIGHT_KEY] = (
        float(weight)
        if isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight)
        else None
    )
    return out


def clean_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Checked user values: the A1111 keys only, text as str within MAX_TEXT characters, the weight a
    finite number in [-10, 10] (0 or None clears it, as A1111's dialog does). RequestError names the
    field at fault."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in USER_KEYS:
            raise RequestError(key, f"unknown sidecar key (known: {', '.join(USER_KEYS)})")
        if key == WEIGHT_KEY:
            if value is None or value == "":
                out[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(key, "must be a finite number")
            if not -10 <= value <= 10:
                raise RequestError(key, "must be between -10 and 10")
            out[key] = float(value) or None
            continue
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise RequestError(key, "must be text")
        if len(value) > MAX_TEXT:
            raise RequestError(key, f"is longer than {MAX_TEXT} characters")
        out[key] = value
    return out


def _existing(path: Path) -> dict[str, Any]:
    """The sidecar a save merges into: {} when there is none; RequestError when there is one that is not
    a JSON object (a hand edit gone wrong is never overwritten)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_SIDECAR_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RequestError(
            "file", f"{path.name} is not a JSON object (or is over 1 MiB): fix or remove it, then save again"
        )
    return data


def write_sidecar(path: Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge checked `values` into the sidecar at `path` (other keys kept; empty values removed) and
    write it atomically. Returns what the file now holds."""
    checked = clean_values(values)
    data = _existing(path)
    for key, value in checked.items():
        if value in ("", None):
            data.pop(key, None)
        else:
            data[key] = value
    text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"))
    return data
