"""A1111 API shapes for extensions: `alwayson_scripts` in, /sdapi/v1/scripts, script-info, extensions out.

`alwayson_scripts` is `{"<script name>": {"args": [...] or {...}}}`. The name matches an extension's
name or one of its UiSection titles, case-insensitively. An extension with a `from_alwayson` hook reads
its args itself (sd-webui-controlnet's list of unit objects); otherwise a list is mapped onto the
extension's UI fields in the order it declared them (A1111 clients send positional lists); an object by
field name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webui.core.types import MAX_INIT_PIXELS, RequestError
from webui.plugins.descriptors import UPSCALER_KIND, Field
from webui.plugins.host import PluginHost


def _lookup(host: PluginHost) -> dict[str, str]:
    names: dict[str, str] = {}
    for loaded in host.loaded:
        for alias in host.a1111_names(loaded.name):
            names.setdefault(alias.casefold(), loaded.name)
    for ext, section in host.ui_sections():
        names.setdefault(section.title.casefold(), ext)
    return names


def alwayson_to_extension_args(
    host: PluginHost, alwayson: Mapping[str, Any], *, max_pixels: int = MAX_INIT_PIXELS
) -> dict[str, dict[str, Any]]:
    """extension_args (validated: image fields decoded, at most `max_pixels` each) from an A1111
    `alwayson_scripts` object."""
    if not isinstance(alwayson, Mapping):
        raise RequestError("alwayson_scripts", "must be an object keyed by script name")
    names = _lookup(host)
    out: dict[str, dict[str, Any]] = {}
    for key, body in alwayson.items():
        where = f"alwayson_scripts.{key}"
        name = names.get(str(key).casefold())
        if name is None:
            raise RequestError(
                "alwayson_scripts", f"unknown script {key!r}; available: {', '.join(sorted(names))}"
            )
        args = body.get("args", []) if isinstance(body, Mapping) else None
        fields = host.ui_fields(name)
        try:
            own = host.from_alwayson(name, args) if isinstance(body, Mapping) else None
        except RequestError as e:  # named by the key the client sent (ADetailer, not detailer)
            inner = e.field.removeprefix(f"alwayson_scripts.{name}")
            raise RequestError(f"{where}{inner}", e.message) from e
        if own is not None:
            values = own
        elif isinstance(args, list):
            if len(args) > len(fields):
                raise RequestError(
                    f"{where}.args", f"{len(args)} values given, the script takes {len(fields)}"
                )
            values = {f.name: v for f, v in zip(fields, args, strict=False)}
        elif isinstance(args, Mapping):
            values = dict(args)
        else:
            raise RequestError(where, 'must be {"args": [...]} or {"args": {...}}')
        out.setdefault(name, {}).update(values)
    return host.check_extension_args(out, max_pixels=max_pixels)


def _arg_info(f: Field, upscalers: list[str]) -> dict[str, Any]:
    """A1111's script-info entry for a field; an "upscaler" field's choices are `upscalers`."""
    choices = ["None", *upscalers] if f.kind == UPSCALER_KIND else list(f.choices)
    return {
        "label": f.label or f.name,
        "value": f.default,
        "minimum": f.minimum,
        "maximum": f.maximum,
        "step": f.step,
        "choices": choices or None,
    }


def _script_name(host: PluginHost, ext: str) -> str:
    """An always-on extension's script name: the one A1111 clients know (`adetailer`), else its own."""
    return host.a1111_names(ext)[-1].casefold()


def sdapi_scripts(host: PluginHost, selectable: bool = True) -> dict[str, list[str]]:
    """GET /sdapi/v1/scripts: selectable scripts (unless `selectable` is off: a server that does not
    take `script_name` lists only what it accepts) and always-on ones (extensions with an accordion)."""
    out: dict[str, list[str]] = {}
    for tab in ("txt2img", "img2img"):
        chosen = host.scripts().items() if selectable else ()
        names = [name.casefold() for name, (_, s) in chosen if tab in s.tabs]
        names += [_script_name(host, ext) for ext in dict.fromkeys(e for e, _ in host.ui_sections(tab))]
        out[tab] = names
    return out


def sdapi_script_info(host: PluginHost, selectable: bool = True) -> list[dict[str, Any]]:
    """GET /sdapi/v1/script-info (selectable scripts only when `selectable`)."""
    out: list[dict[str, Any]] = []
    upscalers = list(host.picture_upscalers())
    for name, (_, spec) in host.scripts().items() if selectable else ():
        for tab in spec.tabs:
            args = [_arg_info(f, upscalers) for f in spec.fields]
            out.append(
                {"name": name.casefold(), "is_alwayson": False, "is_img2img": tab == "img2img", "args": args}
            )
    for tab in ("txt2img", "img2img"):
        for ext in dict.fromkeys(e for e, _ in host.ui_sections(tab)):
            args = [_arg_info(f, upscalers) for f in host.ui_fields(ext)]
            name = _script_name(host, ext)
            out.append({"name": name, "is_alwayson": True, "is_img2img": tab == "img2img", "args": args})
    return out


def sdapi_extensions(host: PluginHost) -> list[dict[str, Any]]:
    """GET /sdapi/v1/extensions (A1111's ExtensionItem fields, plus status and error)."""
    from webui.plugins.install import git_info

    out = []
    for info in host.extensions():
        git = git_info(info.location) if info.source != "pip" else {}
        out.append(
            {
                "name": info.name,
                "remote": git.get("remote", ""),
                "branch": git.get("branch", ""),
                "commit_hash": git.get("commit", ""),
                "version": info.version,
                "commit_date": int(git.get("date", 0) or 0),
                "enabled": info.enabled,
                "status": info.status,
                "error": info.error or info.last_job_error,
            }
        )
    return out
