"""Moving parameters and images between tabs: "send to txt2img/img2img/inpaint", "reuse parameters".

"Send to img2img / inpaint" carries the selected image with its prompt, negative prompt, seed, steps,
sampler, schedule type, CFG and size (A1111's send_seed / send_size defaults), read from that image's
infotext; "Send to extras" carries the picture only.

`field_updates(fields, values)` turns `{field name: value}` (as webui.ui.params reads them from an
image) into one update per named component of a tab, in the tab's field order; fields an image does
not name are left as they are (`gr.skip()`), values a control cannot take are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from webui.ui import params
from webui.ui.extension_sections import PREFIX as EXT_PREFIX
from webui.ui.extension_sections import host_of, infotext_values
from webui.ui.img2img_tab import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES
from webui.ui.widgets import clamp_for, selected_index

# what "Send to img2img / inpaint" carries with the picture (request field names)
SENT_WITH_IMAGE = (
    "prompt", "negative_prompt", "seed", "steps", "sampler_name", "scheduler", "cfg_scale", "width", "height",
)  # fmt: skip


def tab_field_names(fields: Mapping[str, Any]) -> list[str]:
    """The request's fields and the extension accordions' (`_ext.<extension>.<field>`)."""
    return [n for n in fields if not n.startswith("_") or n.startswith(EXT_PREFIX)]


def ui_value(name: str, value: Any, component: Any) -> Any:
    """The value as the control shows it, or gr.skip() when it cannot take it."""
    choices = getattr(component, "choices", None)
    if name == "inpainting_fill":
        return (
            MASKED_CONTENT[value]
            if isinstance(value, int) and 0 <= value < len(MASKED_CONTENT)
            else gr.skip()
        )
    if name == "inpainting_mask_invert":
        return MASK_MODES[value] if isinstance(value, int) and 0 <= value < len(MASK_MODES) else gr.skip()
    if name == "inpaint_full_res":
        return INPAINT_AREAS[1 if value else 0]
    if name == "resize_mode":
        return RESIZE_MODES[value] if isinstance(value, int) and 0 <= value < len(RESIZE_MODES) else gr.skip()
    if name == "modules" and choices is not None and isinstance(value, list):
        known = [c[1] if isinstance(c, tuple) else c for c in choices]  # file names; infotext has stems
        found = [next((k for k in known if v in (k, k.rsplit(".", 1)[0])), None) for v in value]
        return gr.skip() if None in found else found
    if name in ("seed_resize_from_w", "seed_resize_from_h") and isinstance(value, int) and value < 0:
        return 0
    if choices is not None and not isinstance(component, gr.CheckboxGroup):
        known = [c[1] if isinstance(c, tuple) else c for c in choices]
        return value if value in known else gr.skip()
    return clamp_for(component, value)


def field_updates(fields: Mapping[str, Any], values: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name in tab_field_names(fields):
        out.append(ui_value(name, values[name], fields[name]) if name in values else gr.skip())
    return out


def _image_from_gallery(gallery: Any, index: int) -> str | None:
    at = selected_index(gallery, index)
    if at is None:
        return None
    item = gallery[at]
    path = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(path, Mapping):
        path = path.get("path") or path.get("name")
    return str(path) if path else None


def carried_updates(
    fields: Mapping[str, Any], names: list[str], infotexts: list[str] | None, index: Any
) -> list[Any]:
    """One update per name in `names`: the value the selected image's infotext gives it, or unchanged."""
    at = selected_index(infotexts, index)
    values = params.from_infotext(infotexts[at]) if infotexts and at is not None and infotexts[at] else {}
    return [ui_value(n, values[n], fields[n]) if n in values else gr.skip() for n in names]


def editor_value(path: str | None) -> Any:
    return {"background": path, "layers": [], "composite": path} if path else gr.skip()


def wire_result_actions(
    ctx: Any,
    f: Mapping[str, Any],
    runners: Mapping[str, Any],
    tabs: Any,
    picked: list[Any],
    path_of: Any,
) -> None:
    """A results list's Reuse parameters (its `_info` into txt2img) and Send to img2img / inpaint /
    extras buttons (`_reuse`, `_to_<tab>`): `path_of(*values of picked)` is the chosen image's file."""
    from webui.ui.pnginfo_tab import find_model_for

    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
    find_model = find_model_for(ctx)
    txt = runners["txt2img"].fields
    names = tab_field_names(txt)

    def reuse(info: str) -> list[Any]:
        if not info:
            return [gr.skip()] * (len(names) + 1)
        return [*field_updates(txt, params.from_infotext(info, find_model)), gr.update(selected="txt2img")]

    f["_reuse"].click(reuse, f["_info"], [*(txt[n] for n in names), tabs], **quiet)
    targets = {
        "img2img": runners["img2img"].fields["_init_image"],
        "inpaint": runners["inpaint"].fields["_editor"],
    }
    if "extras" in runners:
        targets["extras"] = runners["extras"].fields["_image"]
    for target, component in targets.items():

        def send(*values: Any, target: str = target) -> list[Any]:
            path = path_of(*values)
            if path is None:
                return [gr.skip(), gr.skip()]
            return [editor_value(path) if target == "inpaint" else path, gr.update(selected=target)]

        f[f"_to_{target}"].click(send, picked, [component, tabs], **quiet)


def wire_sendto(ctx: Any, runners: Mapping[str, Any], tabs: Any, pnginfo: Mapping[str, Any] | None) -> None:
    """Gallery buttons of each generation tab, and PNG Info's buttons."""
    from webui.ui.pnginfo_tab import find_model_for

    find_model = find_model_for(ctx)
    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
    image_targets = {
        "img2img": runners["img2img"].fields["_init_image"],
        "inpaint": runners["inpaint"].fields["_editor"],
    }
    if "extras" in runners:
        image_targets["extras"] = runners["extras"].fields["_image"]

    for runner in runners.values():
        f = runner.fields
        for target, button in (
            ("img2img", "_to_img2img"),
            ("inpaint", "_to_inpaint"),
            ("extras", "_to_extras"),
        ):
            if button not in f or target not in image_targets:
                continue
            component = image_targets[target]
            tf = runners[target].fields
            carried = [n for n in SENT_WITH_IMAGE if n in tf] if target != "extras" else []

            def send(
                gallery: Any,
                index: int,
                infotexts: list[str] | None,
                target: str = target,
                carried: list[str] = carried,
                tf: Mapping[str, Any] = tf,
            ) -> list[Any]:
                path = _image_from_gallery(gallery, index)
                if path is None:
                    return [gr.skip()] * (2 + len(carried))
                value = editor_value(path) if target == "inpaint" else path
                return [value, gr.update(selected=target), *carried_updates(tf, carried, infotexts, index)]

            outputs = [component, tabs, *(tf[n] for n in carried)]
            f[button].click(send, [f["_gallery"], f["_selected"], f["_infotexts"]], outputs, **quiet)

        if "_reuse" not in f:
            continue  # Extras has no parameters to reuse

        def reuse(info: str, fields: Mapping[str, Any] = f) -> list[Any]:
            if not info:
                return [gr.skip()] * len(tab_field_names(fields))
            values = {**params.from_infotext(info, find_model), **infotext_values(host_of(ctx), info)}
            return field_updates(fields, values)

        f["_reuse"].click(reuse, f["_info"], [f[n] for n in tab_field_names(f)], **quiet)

    if pnginfo is None:
        return
    for target, button in (
        ("txt2img", "_to_txt2img"),
        ("img2img", "_to_img2img"),
        ("inpaint", "_to_inpaint"),
    ):
        tf = runners[target].fields
        names = tab_field_names(tf)
        outputs = [tf[n] for n in names] + [tabs]
        if target in image_targets:
            outputs.append(image_targets[target])

        def send_fields(
            values: dict[str, Any], path: str | None, target: str = target, tf: Mapping[str, Any] = tf
        ) -> list[Any]:
            out = [*field_updates(tf, values or {}), gr.update(selected=target)]
            if target in image_targets:
                out.append(
                    path if target == "img2img" and path else editor_value(path) if path else gr.skip()
                )
            return out

        pnginfo[button].click(send_fields, [pnginfo["_fields"], pnginfo["_image"]], outputs, **quiet)
