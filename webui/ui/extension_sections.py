"""Extension accordions: each UiSection an extension registers for a tab, rendered with its Fields.

`build_sections(ctx, tab)` draws one accordion per section (inside the tab's extension column) and
returns an `ExtensionInputs`: the components keyed `_ext.<extension>.<field>` (the leading "_" keeps
them out of the request's own fields and of send-to) and `args(values)`, which turns the submitted
values into `request.extension_args[<extension name>][<field name>]`, validated by the host. The
Inpaint tab shows the img2img sections (it makes img2img jobs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

PREFIX = "_ext."
TAB_SECTIONS = {"txt2img": "txt2img", "img2img": "img2img", "inpaint": "img2img"}


def host_of(ctx: Any) -> Any | None:
    """The engine's PluginHost, or None when the engine runs without extensions."""
    hooks = getattr(ctx.services.engine, "hooks", None)
    return hooks if hooks is not None and hasattr(hooks, "ui_sections") else None


def picture_upscaler_names(ctx: Any) -> list[str]:
    """The studio's picture upscalers besides "None" (Lanczos, Nearest, then the extensions'): what Extras
    and a Field of kind "upscaler" offer."""
    names = getattr(ctx.services.engine, "extras_upscalers", None)
    return list(names()) if callable(names) else []


def rescanned_upscaler_names(ctx: Any) -> list[str]:
    """picture_upscaler_names after the extensions list their model files again (a Refresh button);
    an extension that could not is shown as a warning."""
    host = host_of(ctx)
    rescan = getattr(host, "rescan_upscalers", None)
    for problem in rescan() if callable(rescan) else ():
        gr.Warning(f"Refresh upscalers: {problem}")
    return picture_upscaler_names(ctx)


def field_key(extension: str, name: str) -> str:
    return f"{PREFIX}{extension}.{name}"


def split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    extension, _, name = key[len(PREFIX) :].rpartition(".")
    return (extension, name) if extension and name else None


def infotext_values(host: Any | None, text: str) -> dict[str, Any]:
    """`{field key: value}` for the extension accordions from an image's infotext (each extension's
    `infotext_fields` hook reads its own keys: PNG Info's "send to" and "reuse parameters")."""
    if host is None or not text or not hasattr(host, "fields_from_infotext"):
        return {}
    from webui.core.outputs.infotext import parse_infotext

    found = host.fields_from_infotext(parse_infotext(text))
    return {field_key(ext, name): v for ext, values in found.items() for name, v in values.items()}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def render_field(f: Any, elem_id: str, upscalers: Sequence[str] = ()) -> Any:
    """One Gradio control for a plugin Field (kind: checkbox, slider, number, text, textarea,
    dropdown, radio, image, mask, upscaler). An "upscaler" field is a dropdown of "None" and
    `upscalers` (the engine's: `picture_upscaler_names(ctx)`)."""
    label = f.label or f.name.replace("_", " ")
    common: dict[str, Any] = dict(label=label, elem_id=elem_id, info=f.info or None)
    if f.kind == "checkbox":
        return gr.Checkbox(bool(f.default), **common)
    if f.kind == "slider":
        lo = f.minimum if f.minimum is not None else min(0.0, float(f.default))
        hi = f.maximum if f.maximum is not None else max(100.0, float(f.default))
        step = f.step if f.step is not None else (1 if all(_whole(v) for v in (lo, hi, f.default)) else 0.01)
        return gr.Slider(lo, hi, value=f.default, step=step, min_width=160, **common)
    if f.kind == "number":
        return gr.Number(
            f.default, minimum=f.minimum, maximum=f.maximum, step=f.step or 1, min_width=140, **common
        )
    if f.kind in ("text", "textarea"):
        lines = 1 if f.kind == "text" else 4
        return gr.Textbox(str(f.default), lines=lines, max_lines=lines if lines == 1 else 20, **common)
    if f.kind == "dropdown":
        return gr.Dropdown(list(f.choices), value=f.default, min_width=160, **common)
    if f.kind == "radio":
        return gr.Radio(list(f.choices), value=f.default, **common)
    if f.kind == "upscaler":
        names = ["None", *(n for n in upscalers if n != "None")]
        value = f.default if f.default in names else "None"
        return gr.Dropdown(names, value=value, min_width=160, **common)
    if f.kind in ("image", "mask"):  # a PIL image (or None) that the host sanitises like an API image
        return gr.Image(
            None,
            type="pil",
            image_mode="L" if f.kind == "mask" else "RGB",
            sources=["upload", "clipboard"],
            height=240,
            label=label,
            elem_id=elem_id,
        )
    raise ValueError(f"field {f.name!r}: unknown kind {f.kind!r}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


@dataclass
class ExtensionInputs:
    """The extension controls of one tab and how their values become `extension_args`."""

    host: Any | None
    components: dict[str, Any] = field(default_factory=dict)  # field key -> component
    fields: dict[str, Any] = field(default_factory=dict)  # field key -> plugin Field

    def args(self, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """{extension: {field: value}} from the tab's submitted values, checked by the host
        (a bad value raises RequestError naming `extension_args.<ext>.<field>`)."""
        out: dict[str, dict[str, Any]] = {}
        for key, f in self.fields.items():
            if key not in values:
                continue
            where = split_key(key)
            if where is None:
                continue
            out.setdefault(where[0], {})[where[1]] = plain_value(f, values[key])
        if not out or self.host is None:
            return out
        checked: dict[str, dict[str, Any]] = self.host.check_extension_args(out)
        return checked

    def extra(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The request keyword arguments these controls add (for TabRunner)."""
        args = self.args(values)
        return {"extension_args": args} if args else {}


def plain_value(f: Any, value: Any) -> Any:
    """A UI value in the type the Field expects (Gradio gives floats for whole-number sliders, None for
    an emptied number box)."""
    whole_default = isinstance(f.default, int) and not isinstance(f.default, bool)
    if f.kind in ("slider", "number") and isinstance(value, float) and value.is_integer() and whole_default:
        return int(value)
    if f.kind in ("slider", "number") and value is None:
        return f.default
    if f.kind in ("text", "textarea") and value is None:
        return ""
    return value


def build_sections(ctx: Any, tab: str) -> ExtensionInputs:
    """Accordions for every UiSection registered for this tab (call inside the tab's layout)."""
    host = host_of(ctx)
    inputs = ExtensionInputs(host)
    if host is None:
        return inputs
    upscalers = picture_upscaler_names(ctx)
    for extension, section in host.ui_sections(TAB_SECTIONS.get(tab, tab)):
        elem = f"{tab}_ext_{_slug(extension)}"
        with gr.Accordion(section.title, open=section.open, elem_id=elem, elem_classes="sf-ext-section"):
            loose = [f for f in section.fields if not f.group]
            _render(inputs, extension, loose, elem, upscalers)
            groups = list(dict.fromkeys(f.group for f in section.fields if f.group))
            if not groups:
                if section.preview is not None:
                    _preview_button(host, extension, section, inputs, elem, loose)
                continue
            with gr.Tabs(elem_id=f"{elem}_tabs"):
                for group in groups:
                    tab_elem = f"{elem}_{_slug(group)}"
                    with gr.Tab(group, elem_id=tab_elem):
                        grouped = [f for f in section.fields if f.group == group]
                        _render(inputs, extension, grouped, elem, upscalers)
                        if section.preview is not None:
                            _preview_button(host, extension, section, inputs, tab_elem, loose + grouped)
    return inputs


def _render(
    inputs: ExtensionInputs, extension: str, fields: list[Any], elem: str, upscalers: Sequence[str]
) -> None:
    for f in fields:
        key = field_key(extension, f.name)
        inputs.components[key] = render_field(f, f"{elem}_{_slug(f.name)}", upscalers)
        inputs.fields[key] = f


def run_preview(host: Any, extension: str, section: Any, *values: Any, fields: Any = None) -> Any:
    """The section's preview picture for its submitted values (in the order of `fields`: the section's
    fields, or a group's); a bad value or a preview that fails is shown as a warning and leaves the
    picture as it was."""
    from webui.core.types import RequestError

    shown = section.fields if fields is None else fields
    given = {f.name: plain_value(f, v) for f, v in zip(shown, values, strict=True)}
    try:
        checked = host.check_extension_args({extension: given})[extension]
        return section.preview(checked)
    except RequestError as e:
        gr.Warning(f"{e.field}: {e.message}")
    except Exception as e:  # an extension's bug: reported, never fatal
        gr.Warning(f"{extension}: the preview failed ({type(e).__name__}: {e})")
    return gr.skip()


def _preview_button(
    host: Any, extension: str, section: Any, inputs: ExtensionInputs, elem: str, fields: list[Any]
) -> None:
    button = gr.Button("Preview", size="sm", elem_id=f"{elem}_preview_button")
    picture = gr.Image(
        None, type="pil", interactive=False, label="Preview", height=240, elem_id=f"{elem}_preview"
    )
    sources = [inputs.components[field_key(extension, f.name)] for f in fields]

    def show(*values: Any) -> Any:
        return run_preview(host, extension, section, *values, fields=fields)

    button.click(show, sources, picture, concurrency_limit=1, api_visibility="private")
