"""The output size of img2img and inpaint, as A1111 offers it: "Resize to" (width and height, 📐 takes
the picture's own size) or "Resize by" (the picture's size times a scale). An uploaded picture sets
width and height to its own size, so a 320x256 picture is not stretched to 512x512 by default.

Sizes are snapped to the nearest multiple of 8 (the latent downscale); a picture larger than the sliders
go is fitted inside them, keeping its aspect ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from webui.core.sizes import LATENT_DOWNSCALE
from webui.ui import widgets
from webui.ui.widgets import MAX_UI_SIZE, MIN_UI_SIZE, QUIET, snap_to_step

SIZE_MODES = ["Resize to", "Resize by"]


def snap(value: float) -> int:
    """The nearest multiple of 8, and at least the smallest size the sliders take."""
    return int(snap_to_step(value, MIN_UI_SIZE, LATENT_DOWNSCALE))


def picture_size(value: Any) -> tuple[int, int] | None:
    """(width, height) of a PIL image, a numpy array, or an ImageEditor value (its background)."""
    if isinstance(value, Mapping):
        value = value.get("background")
    if value is None:
        return None
    size = getattr(value, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return int(size[0]), int(size[1])
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) >= 2:
        return int(shape[1]), int(shape[0])
    return None


def fitted_size(size: tuple[int, int]) -> tuple[int, int]:
    """The picture's size for the Width/Height sliders: snapped, shrunk to fit MAX_UI_SIZE if larger."""
    w, h = size
    factor = min(1.0, MAX_UI_SIZE / max(w, h, 1))
    return min(snap(w * factor), MAX_UI_SIZE), min(snap(h * factor), MAX_UI_SIZE)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """ "Resize by": the picture's size times `scale`, snapped (not limited: the request checks it)."""
    return snap(size[0] * scale), snap(size[1] * scale)


def size_of_picture(value: Any) -> tuple[Any, Any]:
    """Updates for (width, height): the picture's own size; unchanged when there is no picture."""
    size = picture_size(value)
    return (gr.skip(), gr.skip()) if size is None else fitted_size(size)


def scale_note(value: Any, scale: float) -> str:
    size = picture_size(value)
    if size is None:
        return "Resize by: upload a picture first"
    w, h = scaled_size(size, float(scale or 1))
    return f"Resize by: from {size[0]}x{size[1]} to {w}x{h}"


def size_controls(tab: str) -> dict[str, Any]:
    """Resize to / Resize by, then either width and height (with ⇅ and 📐) or the scale."""
    f: dict[str, Any] = {}
    f["_size_mode"] = gr.Radio(SIZE_MODES, value=SIZE_MODES[0], label="Size", elem_id=f"{tab}_size_mode")
    with gr.Column(visible=True) as to_box:
        f.update(widgets.size_controls(tab, detect=True))
    with gr.Column(visible=False) as by_box:
        f["_scale_by"] = gr.Slider(0.05, 4, value=1, step=0.05, label="Scale", elem_id=f"{tab}_scale_by")
        f["_scale_note"] = gr.Textbox(
            "", show_label=False, interactive=False, container=False, elem_id=f"{tab}_scale_note"
        )
    f["_size_mode"].change(
        lambda mode: (gr.update(visible=mode != SIZE_MODES[1]), gr.update(visible=mode == SIZE_MODES[1])),
        f["_size_mode"],
        [to_box, by_box],
        **QUIET,
    )
    return f


def size_of_new_picture(value: Any, last: Any) -> tuple[Any, Any, Any]:
    """(width, height, remembered size): the picture's size when it differs from the remembered one
    (a new picture, not a brush stroke on the same one); else all unchanged."""
    size = picture_size(value)
    if size is None or list(size) == last:
        return gr.skip(), gr.skip(), gr.skip()
    return (*fitted_size(size), list(size))


def wire_picture_size(f: dict[str, Any], picture: str, detect: tuple[Any, list[Any]] | None = None) -> None:
    """An uploaded picture sets width and height to its size; 📐 does the same on demand (or runs
    `detect`: (function, inputs) giving (width, height) updates); the "Resize by" note follows the
    picture and the scale."""
    size_outputs = [f["width"], f["height"]]
    if isinstance(f[picture], gr.Image):
        f[picture].upload(size_of_picture, f[picture], size_outputs, **QUIET)
    else:  # the editor's upload event can carry the value from before the upload: its edits follow
        shown = gr.State(None)  # the size last taken from a picture (brush strokes keep it)
        for event in (f[picture].upload, f[picture].input):
            event(size_of_new_picture, [f[picture], shown], [*size_outputs, shown], **QUIET)
    detect_fn, detect_inputs = detect or (size_of_picture, [f[picture]])
    f["_detect_size"].click(detect_fn, detect_inputs, size_outputs, **QUIET)
    note_inputs = [f[picture], f["_scale_by"]]
    # the editor changes with every brush stroke: its note follows uploads only
    picture_event = f[picture].change if isinstance(f[picture], gr.Image) else f[picture].upload
    for event in (picture_event, f["_scale_by"].change, f["_size_mode"].change):
        event(scale_note, note_inputs, f["_scale_note"], trigger_mode="always_last", **QUIET)


def requested_size(values: Mapping[str, Any], picture: Any) -> dict[str, Any]:
    """With "Resize by", the request's width and height from the picture and the scale; else nothing."""
    size = picture_size(picture)
    if values.get("_size_mode") != SIZE_MODES[1] or size is None:
        return {}
    width, height = scaled_size(size, float(values.get("_scale_by") or 1))
    return {"width": width, "height": height}


EXTRA_INPUTS = ("_size_mode", "_scale_by")  # what requested_size reads from a tab's values
