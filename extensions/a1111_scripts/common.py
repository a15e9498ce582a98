"""What the scripts share: their result shape and A1111-style argument checking."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import Field, GenerationResult, RequestError


@dataclass(frozen=True)
class ScriptRun:
    """What a script made: the server and the UI show the grid (if any), then every cell's images."""

    cells: tuple[GenerationResult | None, ...]
    grid: Image.Image | None = None
    grid_path: Path | None = None
    infotext: str = ""
    interrupted: bool = False
    captions: tuple[str, ...] = ()  # per cell, shown under its image in the gallery


def checked(fields: Iterable[Field], args: Mapping[str, Any], free: tuple[str, ...] = ()) -> dict[str, Any]:
    """The script's values by field name (defaults filled in), checked against the fields. A1111 clients
    send a dropdown or radio as its index (`type="index"` in A1111's UI) or its text; both are accepted.
    Fields named in `free` are passed through unchecked (the script reads them itself)."""
    out: dict[str, Any] = {}
    for f in fields:
        value = args.get(f.name, f.default)
        if value is None:
            value = f.default
        if f.name in free:
            out[f.name] = value
            continue
        if f.kind in ("dropdown", "radio") and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(f.choices):
                listed = ", ".join(f"{i} ({c})" for i, c in enumerate(f.choices))
                raise RequestError(f.name, f"must be one of {listed}, got {value}")
            value = f.choices[value]
        if f.kind in ("slider", "number") and isinstance(value, float) and value.is_integer():
            value = int(value) if isinstance(f.default, int) else value
        out[f.name] = f.coerce(value, f.name)
    return out
