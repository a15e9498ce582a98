"""The PNG Info tab: drop any image; see its parameters (A1111/Sfumato infotext, ComfyUI `prompt` and
`workflow`, InvokeAI `invokeai_metadata`, any other text chunk) and send them to a tab.

Everything is shown in text boxes (never as HTML), so markup inside metadata stays text.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from webui.ui import params
from webui.ui.context import StudioContext
from webui.ui.extension_sections import host_of, infotext_values


def image_chunks(path: str | None) -> dict[str, str]:
    """The text metadata of an image file (PNG text chunks, JPEG/WebP EXIF user comment via read_infotext)."""
    from PIL import Image

    from webui.core.outputs.saving import read_infotext

    if not path:
        return {}
    out: dict[str, str] = {}
    with Image.open(path) as image:
        info = dict(image.info)
        info.update(getattr(image, "text", {}) or {})
        for key, value in info.items():
            if isinstance(value, bytes) and key not in ("exif", "icc_profile", "xmp"):
                value = value.decode("utf-8", errors="replace")
            if isinstance(value, str):
                out[str(key)] = value
        if "parameters" not in out:
            text = read_infotext(image)
            if text:
                out["parameters"] = text
    return out


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return text


def find_model_for(ctx: StudioContext) -> params.FindModel:
    def lookup(name: str) -> str | None:
        hit = ctx.services.find_checkpoint(name)
        return str(hit.title) if hit is not None else None

    return lookup


def read_image(ctx: StudioContext, path: str | None) -> tuple[str, str, str, dict[str, Any]]:
    """(format line, parameters text, other chunks text, fields) of an image."""
    try:
        chunks = image_chunks(path)
    except OSError as e:
        return f"Cannot read this image: {e}", "", "", {}
    fmt, fields = params.from_chunks(chunks, find_model_for(ctx))
    if fmt == "A1111 infotext":  # the extension accordions' values (ADetailer's keys, ...)
        fields = {**fields, **infotext_values(host_of(ctx), chunks.get("parameters", ""))}
    main = chunks.get("parameters") or chunks.get("invokeai_metadata") or chunks.get("prompt") or ""
    others = "\n\n".join(f"[{k}]\n{_pretty(v)}" for k, v in chunks.items() if v != main)
    if not path:
        summary = ""
    elif fmt:
        summary = f"{fmt}: {len(fields)} fields found"
    else:
        summary = "No generation parameters found in this image."
    return summary, _pretty(main) if fmt != "A1111 infotext" else main, others, fields


def build_pnginfo(ctx: StudioContext) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Row(elem_classes="sf-main-row"):
        with gr.Column(scale=1, min_width=200):
            f["_image"] = gr.Image(
                label="Source",
                type="filepath",
                sources=["upload", "clipboard"],
                elem_id="pnginfo_image",
                height=400,
            )
        with gr.Column(scale=1, min_width=200):
            f["_summary"] = gr.Textbox(label="Format", interactive=False, elem_id="pnginfo_summary", lines=1)
            f["_parameters"] = gr.Textbox(
                label="Parameters",
                interactive=False,
                lines=6,
                max_lines=20,
                elem_id="pnginfo_parameters",
                buttons=["copy"],
            )
            with gr.Row():
                f["_to_txt2img"] = gr.Button(
                    "Send to txt2img", elem_id="pnginfo_to_txt2img", size="sm", min_width=100
                )
                f["_to_img2img"] = gr.Button(
                    "Send to img2img", elem_id="pnginfo_to_img2img", size="sm", min_width=100
                )
                f["_to_inpaint"] = gr.Button(
                    "Send to inpaint", elem_id="pnginfo_to_inpaint", size="sm", min_width=100
                )
            f["_others"] = gr.Textbox(
                label="Other metadata", interactive=False, lines=4, max_lines=30, elem_id="pnginfo_other"
            )
    f["_fields"] = gr.State({})

    def on_image(path: str | None) -> tuple[str, str, str, dict[str, Any]]:
        return read_image(ctx, path)

    f["_image"].change(
        on_image, f["_image"], [f["_summary"], f["_parameters"], f["_others"], f["_fields"]],
        concurrency_limit=None, api_visibility="private",
    )  # fmt: skip
    return f
