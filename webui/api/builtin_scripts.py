"""A1111's built-in always-on scripts that are core features here rather than extensions: their
`alwayson_scripts` entries become request fields before the rest goes to the extensions.

- "Soft Inpainting" (A1111 1.8, img2img only), matched in any case as A1111 matches script titles:
  `{"args": [enabled, schedule bias, preservation strength, transition contrast boost, mask influence,
  difference threshold, difference contrast]}` (A1111's order; a shorter list leaves the rest at their
  defaults), or an object by the request's field names (`soft_inpainting`, `mask_blend_power`, ...).
  Disabled, the other values are not used (as in A1111). A bad value is a RequestError naming
  `alwayson_scripts.<key>.<field>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from webui.core import soft_inpaint_fields as soft
from webui.core.types import RequestError

TITLE = soft.SCRIPT_TITLE.casefold()
ARG_FIELDS = (soft.ENABLED_FIELD, *soft.FIELDS)  # A1111's positional order


def split(
    scripts: Mapping[str, Any] | None, request_fields: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(request fields set by built-in scripts, the other `alwayson_scripts` entries)."""
    found: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, body in (scripts or {}).items():
        if str(key).casefold() != TITLE:
            rest[key] = body
            continue
        where = f"alwayson_scripts.{key}"
        if soft.ENABLED_FIELD not in request_fields:
            raise RequestError(where, "runs in img2img (inpainting) only")
        found.update(_soft_args(body, where))
    return found, rest


def _soft_args(body: Any, where: str) -> dict[str, Any]:
    args = body.get("args", []) if isinstance(body, Mapping) else None
    if isinstance(args, list):
        if len(args) > len(ARG_FIELDS):
            raise RequestError(
                f"{where}.args", f"{len(args)} values given, the script takes {len(ARG_FIELDS)}"
            )
        values = dict(zip(ARG_FIELDS, args, strict=False))
    elif isinstance(args, Mapping):
        unknown = sorted(set(args) - set(ARG_FIELDS))
        if unknown:
            raise RequestError(f"{where}.args", f"unknown fields {unknown}; it takes {list(ARG_FIELDS)}")
        values = dict(args)
    else:
        raise RequestError(where, 'must be {"args": [...]} or {"args": {...}}')
    enabled = values.get(soft.ENABLED_FIELD, False)
    if not isinstance(enabled, bool):
        raise RequestError(f"{where}.{soft.ENABLED_FIELD}", f"must be true or false, got {enabled!r}")
    if not enabled:
        return {soft.ENABLED_FIELD: False}
    out: dict[str, Any] = {soft.ENABLED_FIELD: True}
    for p in soft.PARAMS:
        if p.field not in values:
            continue
        value = values[p.field]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not p.minimum <= value <= p.maximum:
            raise RequestError(
                f"{where}.{p.field}",
                f"{p.label} must be a number from {p.minimum:g} to {p.maximum:g}, got {value!r}",
            )
        out[p.field] = float(value)
    return out


def script_info() -> dict[str, Any]:
    """Its entry in GET /sdapi/v1/script-info."""
    args = [{"label": soft.ENABLED_LABEL, "value": False, "minimum": None, "maximum": None, "step": None,
             "choices": None}]  # fmt: skip
    args += [
        {"label": p.label, "value": p.default, "minimum": p.minimum, "maximum": p.maximum, "step": p.step,
         "choices": None}
        for p in soft.PARAMS
    ]  # fmt: skip
    return {"name": TITLE, "is_alwayson": True, "is_img2img": True, "args": args}
