"""The img2img and Inpaint tabs: an init image (upload or send-to), denoising, resize mode, outpainting;
the mask painted on the image (gr.ImageEditor: brush, eraser, clear) or uploaded, blur, masked content,
inpaint area and padding, invert. Both make Img2ImgRequest jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from webui.ui import img2img_size, sketch_ui, soft_inpaint_ui, widgets
from webui.ui.context import StudioContext
from webui.ui.extension_sections import build_sections
from webui.ui.library_panel import embedding_accordion
from webui.ui.lora_browser import lora_accordion
from webui.ui.pass_models_ui import refiner_controls, wire_lists
from webui.ui.runner import TabRunner
from webui.ui.script_ui import build_scripts
from webui.ui.styles_editor import build_styles_editor
from webui.ui.topbar import TOPBAR_FIELDS
from webui.ui.txt2img_tab import extension_area

RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
# the painted mask shows the picture through it; any stroke, however faint, is in the mask (its alpha > 0)
MASK_COLOUR, MASK_OPACITY = "#ffffff", 0.5


def mask_from_editor(value: Any) -> Any | None:
    """The painted mask (white = repaint) from an ImageEditor value: the OR of its layers' alpha.
    None when nothing is drawn."""
    import numpy as np
    from PIL import Image

    if not isinstance(value, Mapping):
        return None
    layers = [np.asarray(layer) for layer in (value.get("layers") or []) if layer is not None]
    drawn = None
    for layer in layers:
        alpha = (
            layer[..., 3] > 0
            if layer.ndim == 3 and layer.shape[2] == 4
            else layer.reshape(layer.shape[:2] + (-1,)).max(-1) > 0
        )
        drawn = alpha if drawn is None else drawn | alpha
    if drawn is None or not drawn.any():
        return None
    return Image.fromarray((drawn * 255).astype("uint8"), mode="L")


def background_of(value: Any) -> Any | None:
    import numpy as np
    from PIL import Image

    if not isinstance(value, Mapping) or value.get("background") is None:
        return None
    arr = np.asarray(value["background"])
    image = Image.fromarray(arr.astype("uint8"))
    return image.convert("RGB")


def _common(ctx: StudioContext, tab: str, topbar: dict[str, Any]) -> dict[str, Any]:
    f: dict[str, Any] = {"_infotexts": gr.State([]), "_seeds": gr.State([])}
    f.update(widgets.prompt_area(ctx, tab))
    lora_accordion(ctx, tab, ctx.lora_thumbs)
    embedding_accordion(ctx, tab)
    build_styles_editor(ctx, tab, f)
    return f


def _settings(ctx: StudioContext, f: dict[str, Any], tab: str) -> None:
    f.update(widgets.sampler_controls(ctx, tab))
    f["resize_mode"] = gr.Radio(
        RESIZE_MODES, value=RESIZE_MODES[0], type="index", label="Resize mode", elem_id=f"{tab}_resize_mode"
    )
    f.update(img2img_size.size_controls(tab))
    f.update(widgets.batch_and_cfg(tab))
    f["denoising_strength"] = gr.Slider(
        0, 1, value=0.75, step=0.01, label="Denoising strength", elem_id=f"{tab}_denoising"
    )
    f["image_cfg_scale"] = gr.Slider(
        0, 3, value=1.5, step=0.05, label="Image CFG scale", elem_id=f"{tab}_image_cfg",
        info="instruct-pix2pix models: how closely to keep the source image",
        visible=edits(ctx, ctx.default_prefs().checkpoint),
    )  # fmt: skip
    f.update(widgets.seed_controls(tab))
    f.update(refiner_controls(ctx, tab))
    f.update(widgets.face_controls(tab))


def _outpaint(f: dict[str, Any], tab: str) -> None:
    with gr.Accordion("Outpainting", open=False, elem_id=f"{tab}_outpaint"):
        f["outpaint_pixels"] = gr.Slider(
            0, 512, value=0, step=8, label="Pixels to expand (0: off)", elem_id=f"{tab}_outpaint_pixels"
        )
        f["outpaint_directions"] = gr.CheckboxGroup(
            ["left", "right", "up", "down"],
            value=["left", "right", "up", "down"],
            label="Outpainting direction",
        )
        with gr.Row():
            f["outpaint_fill"] = gr.Radio(
                ["edge", "average", "matched"], value="edge", label="Fill the new area with", min_width=160
            )
            f["outpaint_noise"] = gr.Slider(
                0, 1, value=0, step=0.01, label="Noise in the new area", min_width=160
            )


def edits(ctx: StudioContext, title: str | None) -> bool:
    """Whether the checkpoint is an edit (instruct-pix2pix) model: the Image CFG scale is shown then."""
    family = ctx.services.checkpoint_family(title or None)
    return family is not None and family.edit


def _finish(
    ctx: StudioContext,
    f: dict[str, Any],
    topbar: dict[str, Any],
    job_state: Any,
    extra: Any,
    inputs: tuple[str, ...],
    extensions: Any,
    scripts: Any = None,
) -> TabRunner:
    for name in TOPBAR_FIELDS:
        f[name] = topbar[name]
    wire_lists(ctx, topbar, f)
    inputs = (*inputs, *img2img_size.EXTRA_INPUTS)
    topbar["checkpoint"].change(
        lambda title: gr.update(visible=edits(ctx, title)), topbar["checkpoint"], f["image_cfg_scale"],
        concurrency_limit=None, show_progress="hidden", api_visibility="private", queue=False,
    )  # fmt: skip

    def with_image_cfg(values: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(extra(values))
        if not edits(ctx, values.get("checkpoint")):  # hidden: other models take no image CFG
            out["image_cfg_scale"] = None
        return out

    runner = TabRunner(
        ctx,
        "img2img",
        f,
        job_state,
        extra=with_image_cfg,
        extra_inputs=inputs,
        extensions=extensions,
        scripts=scripts,
    )
    runner.wire()
    return runner


def build_img2img(ctx: StudioContext, topbar: dict[str, Any], job_state: Any) -> TabRunner:
    tab = "img2img"
    f = _common(ctx, tab, topbar)
    with gr.Row(elem_classes="sf-main-row"):
        with gr.Column(scale=1, min_width=200):
            with gr.Tabs(elem_id="img2img_modes") as modes:
                with gr.Tab("Picture", id="img2img_plain", elem_id="img2img_plain_tab") as plain:
                    f["_init_image"] = gr.Image(
                        label="Image for img2img", type="pil", image_mode="RGBA",
                        sources=["upload", "clipboard"], elem_id="img2img_image", height=360,
                    )  # fmt: skip
                sketch_ui.sketch_tab(f, tab, modes, plain, "_init_image", "Sketch")
            _settings(ctx, f, tab)
            _outpaint(f, tab)
            with extension_area(tab):
                extensions = build_sections(ctx, tab)
                scripts = build_scripts(ctx, tab)
        with gr.Column(scale=1, min_width=200):
            f.update(widgets.results_column(tab))

    def extra(values: Mapping[str, Any]) -> dict[str, Any]:
        from webui.core.types import RequestError

        image = sketch_ui.sketch_picture(values) if sketch_ui.sketching(values) else values.get("_init_image")
        if image is None:
            raise RequestError("init_images", "upload an image (or send one from another tab) first")
        return {"init_images": (image.convert("RGB"),), **img2img_size.requested_size(values, image)}

    img2img_size.wire_picture_size(f, "_init_image", sketch_ui.detect_size(f, "_init_image"))
    sketch_ui.wire_size(f)
    return _finish(ctx, f, topbar, job_state, extra, ("_init_image", *sketch_ui.INPUTS), extensions, scripts)


def build_inpaint(ctx: StudioContext, topbar: dict[str, Any], job_state: Any) -> TabRunner:
    tab = "inpaint"
    f = _common(ctx, tab, topbar)
    with gr.Row(elem_classes="sf-main-row"):
        with gr.Column(scale=1, min_width=200):
            with gr.Tabs(elem_id="inpaint_modes") as modes:
                with gr.Tab("Paint a mask", id="inpaint_plain", elem_id="inpaint_plain_tab") as plain:
                    f["_editor"] = gr.ImageEditor(
                        label="Paint the area to change (see-through white brush); eraser and clear in the "
                        "toolbar", type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                        elem_id="inpaint_editor",
                        layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
                        brush=gr.Brush(
                            default_size=20, colors=[(MASK_COLOUR, MASK_OPACITY)], color_mode="fixed"
                        ),
                        eraser=gr.Eraser(default_size=20), transforms=(), height=420,
                    )  # fmt: skip
                    with gr.Accordion("Mask upload (instead of painting)", open=False):
                        f["_mask_upload"] = gr.Image(
                            label="Mask: white = repaint",
                            type="pil",
                            image_mode="L",
                            elem_id="inpaint_mask_upload",
                            height=200,
                        )
                sketch_ui.sketch_tab(f, tab, modes, plain, "_editor", "Inpaint sketch", transparency=True)
            with gr.Row():
                f["mask_blur"] = gr.Slider(
                    0, 64, value=4, step=1, label="Mask blur", elem_id="inpaint_mask_blur", min_width=160
                )
                f["inpainting_mask_invert"] = gr.Radio(
                    MASK_MODES, value=MASK_MODES[0], type="index", label="Mask mode", min_width=160
                )
            f["inpainting_fill"] = gr.Radio(
                MASKED_CONTENT, value="original", type="index", label="Masked content", elem_id="inpaint_fill"
            )
            with gr.Row():
                f["inpaint_full_res"] = gr.Radio(
                    INPAINT_AREAS, value=INPAINT_AREAS[0], label="Inpaint area", min_width=160
                )
                f["inpaint_full_res_padding"] = gr.Slider(
                    0, 256, value=32, step=4, label="Only masked padding, pixels", min_width=160
                )
            soft_inpaint_ui.build(f, tab)
            _settings(ctx, f, tab)
            with extension_area(tab):
                extensions = build_sections(ctx, tab)
                scripts = build_scripts(ctx, "img2img", elem="inpaint")
        with gr.Column(scale=1, min_width=200):
            f.update(widgets.results_column(tab))

    def extra(values: Mapping[str, Any]) -> dict[str, Any]:
        from webui.core.types import RequestError

        if sketch_ui.sketching(values):
            image, mask = sketch_ui.inpaint_sketch_inputs(values)
        else:
            image = background_of(values.get("_editor"))
            if image is None:
                raise RequestError(
                    "init_images", "upload an image to inpaint (or send one from another tab) first"
                )
            mask = values.get("_mask_upload") or mask_from_editor(values.get("_editor"))
        if mask is None:
            raise RequestError("mask", "paint over the area to change, or upload a mask")
        return {
            "init_images": (image,),
            "mask": mask,
            "inpaint_full_res": values.get("inpaint_full_res") == INPAINT_AREAS[1],
            **img2img_size.requested_size(values, image),
        }

    img2img_size.wire_picture_size(f, "_editor", sketch_ui.detect_size(f, "_editor"))
    sketch_ui.wire_size(f)
    inputs = ("_editor", "_mask_upload", *sketch_ui.INPAINT_INPUTS)
    return _finish(ctx, f, topbar, job_state, extra, inputs, extensions, scripts)
