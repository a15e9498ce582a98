"""A1111's `script_name` / `script_args`: run an extension's selectable script (X/Y/Z plot) over the API.

The script gets a runner that submits each of its images as a job of the caller in the fair queue. The
answer is A1111's: the grid first, then the sub grids (when the script made and was asked for them), then
every cell's image (unless the script says `lone_images` is off: A1111's X/Y/Z "Include sub images"),
and `info` as a JSON string.
`script_args` is either a list in the order of the script's fields (see GET /sdapi/v1/script-info) or
an object by field name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from webui.api import images
from webui.core.engine import VERSION
from webui.core.jobs.runner import JobFailed, queue_runner
from webui.core.types import GenerationRequest, RequestError
from webui.plugins.descriptors import ScriptSpec
from webui.plugins.host import PluginHost


def find_script(host: PluginHost | None, name: str | None, tab: str) -> ScriptSpec | None:
    """The selectable script `name` names for this tab (None when no script is asked for)."""
    if not name or name.casefold() == "none":
        return None
    scripts = {
        n.casefold(): spec for n, (_, spec) in (host.scripts().items() if host else ()) if tab in spec.tabs
    }
    spec = scripts.get(name.casefold())
    if spec is None:
        raise RequestError(
            "script_name", f"unknown script {name!r}; available: {', '.join(scripts) or 'none'}"
        )
    return spec


def script_values(spec: ScriptSpec, args: Any) -> dict[str, Any]:
    """`script_args` as {field name: value}."""
    names = [f.name for f in spec.fields]
    if isinstance(args, list):
        if len(args) > len(names):
            raise RequestError("script_args", f"{len(args)} values given; {spec.name!r} takes {names}")
        return dict(zip(names, args, strict=False))
    if isinstance(args, Mapping):
        unknown = sorted(set(args) - set(names))
        if unknown:
            raise RequestError("script_args", f"unknown fields {unknown}; {spec.name!r} takes {names}")
        return dict(args)
    raise RequestError("script_args", "must be a list (in field order) or an object by field name")


def _error_field(spec: ScriptSpec, request: GenerationRequest, field: str) -> str:
    """Where a script's RequestError points: `script_args.<field>` for the script's own values, the
    request's field as it is (`denoising_strength`, `mask`) when the script refuses one of those."""
    if field.startswith(("script_", "override_")):
        return field
    if field in type(request).field_names() and field not in {f.name for f in spec.fields}:
        return field
    return f"script_args.{field}"


def run_script(
    spec: ScriptSpec,
    request: GenerationRequest,
    values: dict[str, Any],
    queue: Any,
    owner: str,
    timeout: float,
) -> dict[str, Any]:
    """Run the script (blocking: call it in a worker thread) and build A1111's response body."""
    try:
        out = spec.run(queue_runner(queue, owner, timeout), request, values)
    except JobFailed as e:
        raise RequestError("script_name", f"{spec.name}: a job failed: {e}") from e
    except RequestError as e:  # the script's own fields are script_args.<name>
        raise RequestError(_error_field(spec, request, e.field), e.message) from e
    encoded: list[str] = []
    infotexts: list[str] = []
    grid = getattr(out, "grid", None)
    if grid is not None:
        path = getattr(out, "grid_path", None)
        text = getattr(out, "infotext", "") or ""
        encoded.append(images.file_b64(path) if path else images.b64(images.png_bytes(grid, text)))
        infotexts.append(text)
        for sub in getattr(out, "sub_grids", ()) or ():
            encoded.append(images.b64(images.png_bytes(sub, text)))
            infotexts.append(text)
    shown = bool(getattr(out, "lone_images", True))
    first = len(encoded)
    seeds: list[int] = []
    warnings: dict[str, None] = {}  # each message once, in order
    for cell in getattr(out, "cells", ()) or ():
        warnings.update(dict.fromkeys(getattr(cell, "warnings", ()) if cell is not None else ()))
        for image in cell.images if cell is not None else ():
            seeds.append(image.seed)
            if not shown:
                continue
            encoded.append(
                images.file_b64(image.path) if image.path else images.b64(images.png_bytes(image.image))
            )
            infotexts.append(image.infotext)
    info = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "infotexts": infotexts,
        "index_of_first_image": first,  # the grids come first (A1111: 1 after its one grid)
        "script_name": spec.name,
        "interrupted": bool(getattr(out, "interrupted", False)),
        "version": VERSION,
        "warnings": list(warnings),
    }
    return {"images": encoded, "info": json.dumps(info)}
