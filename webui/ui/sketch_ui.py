"""The colour-brush modes of img2img and Inpaint, as A1111 has them: img2img "Sketch" (the painted picture
is the init image) and Inpaint "Inpaint sketch" (the painted picture is the init image and the painted
pixels are the mask). Each is a sub-tab beside the tab's usual picture; the selected sub-tab decides what
Generate sends. The image logic lives in webui.core.tasks.sketch.

A new picture sent to the tab's usual picture (send-to, PNG Info) brings its sub-tab back to the front,
so Generate uses what the user sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from webui.ui.img2img_size import size_of_new_picture, size_of_picture
from webui.ui.widgets import QUIET

PLAIN, SKETCH = "plain", "sketch"
# A1111's default sketch brush is white; a palette beside it, and any colour from the picker
SKETCH_COLOURS = [
    "#ffffff",
    "#000000",
    "#808080",
    "#e03c31",
    "#f5a623",
    "#f8e71c",
    "#3cb44b",
    "#2f6fdf",
    "#9b51e0",
]
BRUSH_SIZE = 12
INPUTS = ("_mode", "_sketch")  # what the tab's Generate reads from here
INPAINT_INPUTS = (*INPUTS, "_mask_alpha")  # and the Inpaint tab's, with its transparency


def sketch_editor(elem_id: str, label: str) -> Any:
    return gr.ImageEditor(
        label=label, type="numpy", image_mode="RGBA", sources=["upload", "clipboard"], elem_id=elem_id,
        layers=gr.LayerOptions(allow_additional_layers=False, layers=["sketch"]),
        brush=gr.Brush(default_size=BRUSH_SIZE, colors=SKETCH_COLOURS, default_color=SKETCH_COLOURS[0],
                       color_mode="defaults"),
        eraser=gr.Eraser(default_size=BRUSH_SIZE), transforms=(), height=420,
    )  # fmt: skip


def sketch_tab(
    f: dict[str, Any], tab: str, tabs: Any, plain: Any, picture: str, label: str, transparency: bool = False
) -> None:
    """The sketch sub-tab (call inside `tabs`, after `plain`) as f["_sketch"], and f["_mode"]: which
    sub-tab Generate uses. A change of f[picture] while sketching (send-to) shows `plain` again.
    `transparency`: a "Mask transparency" slider under the editor as f["_mask_alpha"] (Inpaint sketch)."""
    with gr.Tab(label, id=f"{tab}_sketch", elem_id=f"{tab}_sketch_tab") as sketch:
        # inside a Tab: a State that is a direct child of gr.Tabs makes gradio 6.31 draw a second button
        # for a tab each time a select event writes it
        f["_mode"] = gr.State(PLAIN)
        f["_sketch"] = sketch_editor(
            f"{tab}_sketch",
            "Sketch: paint in colour",
        )
        if transparency:
            f["_mask_alpha"] = gr.Slider(
                0, 100, value=0, step=1, label="Mask transparency", elem_id=f"{tab}_mask_alpha",
                info="how see-through the painted colours are; the painted area is repainted either way",
            )  # fmt: skip
    plain.select(lambda: PLAIN, None, f["_mode"], **QUIET)
    sketch.select(lambda: SKETCH, None, f["_mode"], **QUIET)

    def back_to_plain(mode: str) -> tuple[Any, Any]:
        if mode == PLAIN:
            return gr.skip(), gr.skip()
        return gr.update(selected=plain.id), PLAIN

    f[picture].change(back_to_plain, f["_mode"], [tabs, f["_mode"]], **QUIET)


def wire_size(f: dict[str, Any]) -> None:
    """A picture uploaded into the sketch editor sets width and height to its size (strokes keep them)."""
    shown = gr.State(None)
    for event in (f["_sketch"].upload, f["_sketch"].input):
        event(size_of_new_picture, [f["_sketch"], shown], [f["width"], f["height"], shown], **QUIET)


def detect_size(f: dict[str, Any], picture: str) -> tuple[Any, list[Any]]:
    """📐 for a tab with a sketch sub-tab: the size of the picture in the sub-tab in front."""

    def size_in_front(mode: str, plain: Any, sketch: Any) -> tuple[Any, Any]:
        return size_of_picture(sketch if mode == SKETCH else plain)

    return size_in_front, [f["_mode"], f[picture], f["_sketch"]]


def sketching(values: Mapping[str, Any]) -> bool:
    return values.get("_mode") == SKETCH


def _pictures(value: Any) -> tuple[Any, list[Any]]:
    """(background, painted layers) as PIL images from an ImageEditor value; background None if none."""
    import numpy as np
    from PIL import Image

    if not isinstance(value, Mapping) or value.get("background") is None:
        return None, []
    background = Image.fromarray(np.asarray(value["background"]).astype("uint8")).convert("RGB")
    layers = [
        Image.fromarray(np.asarray(layer).astype("uint8")).convert("RGBA")
        for layer in (value.get("layers") or [])
        if layer is not None
    ]
    return background, layers


def sketch_picture(values: Mapping[str, Any]) -> Any:
    """img2img Sketch: the picture with its strokes (the picture alone when nothing is painted)."""
    from webui.core.tasks.sketch import sketch_init
    from webui.core.types import RequestError

    background, layers = _pictures(values.get("_sketch"))
    if background is None:
        raise RequestError("init_images", "upload a picture to sketch on (Sketch tab) first")
    return sketch_init(background, layers)


def inpaint_sketch_inputs(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """Inpaint sketch: (init image, mask) from the painted picture and the mask blur."""
    from webui.core.tasks.sketch import flatten, inpaint_sketch
    from webui.core.types import RequestError

    background, layers = _pictures(values.get("_sketch"))
    if background is None:
        raise RequestError("init_images", "upload a picture to sketch on (Inpaint sketch tab) first")
    try:
        blur = int(round(float(values.get("mask_blur") or 0)))
    except (TypeError, ValueError) as e:
        raise RequestError("mask_blur", f"must be a whole number, got {values.get('mask_blur')!r}") from e
    try:
        alpha = float(values.get("_mask_alpha") or 0)
    except (TypeError, ValueError) as e:
        raise RequestError("mask_alpha", f"must be a number, got {values.get('_mask_alpha')!r}") from e
    result = inpaint_sketch(background, flatten(background, layers), blur, alpha)
    return result.image, result.mask
