"""The Extras tab: upscale one image or a batch of files ("scale by" or "scale to"), with a second
upscaler blended in if wanted, and faces restored (GFPGAN / CodeFormer visibility, CodeFormer weight).
Each click is an "extras" job in the user's queue line; the results are
saved to outputs/extras-images (each keeping its source's parameters) before they are shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext
from webui.ui.extension_sections import picture_upscaler_names, rescanned_upscaler_names
from webui.ui.runner import TabRunner
from webui.ui.widgets import QUIET, warnings_box, wire_gallery_select

SCALE_MODES = ["Scale by", "Scale to"]


def extras_upscaler_names(ctx: StudioContext) -> list[str]:
    """ "None", then Lanczos and Nearest, then the extensions' (model) upscalers."""
    return ["None", *picture_upscaler_names(ctx)]


def load_images(mode: str, single: str | None, batch: list[Any] | None, max_pixels: int) -> dict[str, Any]:
    """The job's images (the batch files in "batch" mode, else the single image), checked and
    sanitised as the API's, with each one's own infotext."""
    from webui.core.tasks.extras import MAX_IMAGES, ExtrasRequest
    from webui.core.tasks.input_images import open_image
    from webui.core.types import RequestError

    if mode == "batch":
        paths = [str(getattr(p, "name", p)) for p in batch or []]
        if not paths:
            raise RequestError("batch", "add image files to upscale (or use Single image)")
        if len(paths) > MAX_IMAGES:
            raise RequestError("batch", f"{len(paths)} files (limit {MAX_IMAGES} a job)")
        field: str | None = "batch"
    else:
        if not single:
            raise RequestError("image", "drop an image to upscale (or files in Batch)")
        paths, field = [single], None
    opened = [
        open_image(Path(p).read_bytes(), f"batch.{i}" if field else "image", max_pixels=max_pixels)
        for i, p in enumerate(paths)
    ]
    request = ExtrasRequest.from_images(opened, field=field)
    return {"images": request.images, "source_infotexts": request.source_infotexts}


def build_extras(ctx: StudioContext, job_state: Any) -> TabRunner:
    tab = "extras"
    f: dict[str, Any] = {}
    f["_infotexts"] = gr.State([])
    f["_seeds"] = gr.State([])
    names = extras_upscaler_names(ctx)
    with gr.Row(elem_classes="sf-main-row"):
        with gr.Column(scale=1, min_width=200, elem_classes="sf-settings"):
            f["_mode"] = gr.State("single")
            with gr.Tabs() as inner_tabs:
                with gr.Tab("Single image", id="extras_single") as single_tab:
                    f["_image"] = gr.Image(
                        label="Source", type="filepath", sources=["upload", "clipboard"],
                        elem_id="extras_image", height=320,
                    )  # fmt: skip
                with gr.Tab("Batch", id="extras_batch_tab") as batch_tab:
                    f["_batch"] = gr.File(
                        label="Images (this tab open: these are upscaled)",
                        file_count="multiple", file_types=["image"], elem_id="extras_batch",
                    )  # fmt: skip
            f["resize_mode"] = gr.Radio(
                SCALE_MODES, value=SCALE_MODES[0], type="index", label="Resize", elem_id="extras_resize_mode"
            )
            f["upscaling_resize"] = gr.Slider(
                1, 8, value=2, step=0.05, label="Scale by", elem_id="extras_upscaling_resize"
            )
            with gr.Row(visible=False) as size_row:
                f["upscaling_resize_w"] = gr.Number(
                    512, precision=0, minimum=1, maximum=8192, label="Width", min_width=100,
                    elem_id="extras_upscaling_resize_w",
                )  # fmt: skip
                f["upscaling_resize_h"] = gr.Number(
                    512, precision=0, minimum=1, maximum=8192, label="Height", min_width=100,
                    elem_id="extras_upscaling_resize_h",
                )  # fmt: skip
                f["upscaling_crop"] = gr.Checkbox(True, label="Crop to fit", min_width=100)
            f["upscaler_1"] = gr.Dropdown(
                names, value="Lanczos", label="Upscaler 1", elem_id="extras_upscaler_1"
            )
            with gr.Row():
                f["upscaler_2"] = gr.Dropdown(
                    names, value="None", label="Upscaler 2", min_width=160, elem_id="extras_upscaler_2"
                )
                f["extras_upscaler_2_visibility"] = gr.Slider(
                    0, 1, value=0, step=0.01, label="Upscaler 2 visibility", min_width=160
                )
            with gr.Accordion("Restore faces", open=False, elem_id="extras_faces"):
                with gr.Row():
                    f["gfpgan_visibility"] = gr.Slider(
                        0, 1, value=0, step=0.001, label="GFPGAN visibility", min_width=160,
                        elem_id="extras_gfpgan_visibility",
                    )  # fmt: skip
                with gr.Row():
                    f["codeformer_visibility"] = gr.Slider(
                        0, 1, value=0, step=0.001, label="CodeFormer visibility", min_width=160,
                        elem_id="extras_codeformer_visibility",
                    )  # fmt: skip
                    f["codeformer_weight"] = gr.Slider(
                        0, 1, value=0, step=0.001, label="CodeFormer weight (0: strongest)",
                        min_width=160, elem_id="extras_codeformer_weight",
                    )  # fmt: skip
                gr.Markdown(
                    "Model files go in `models/GFPGAN` (GFPGANv1.3/v1.4 `.pth`) and `models/Codeformer` "
                    "(`codeformer.pth`); both run as they are. A face restorer that is not installed or "
                    "cannot run is named when you press Upscale.",
                    elem_classes="sf-hint",
                )
            with gr.Row():
                f["_refresh"] = gr.Button("Refresh upscalers", size="sm", elem_id="extras_refresh")
        with gr.Column(scale=1, min_width=200, elem_classes="sf-results"):
            with gr.Row():
                f["_generate"] = gr.Button("Upscale", variant="primary", elem_id="extras_generate")
                f["_interrupt"] = gr.Button("Interrupt", elem_id="extras_interrupt", min_width=80)
                f["_skip"] = gr.Button("Skip", elem_id="extras_skip", min_width=80)
            f["_status"] = gr.HTML("", elem_id="extras_status", padding=False)
            f["_preview"] = gr.Image(visible=False, interactive=False, elem_id="extras_preview", type="pil")
            f["_gallery"] = gr.Gallery(
                label="Output", elem_id="extras_gallery", columns=3, height="auto", object_fit="contain",
                interactive=False, type="filepath", format="png",
            )  # fmt: skip
            f["_warnings"] = warnings_box(tab)
            f["_selected"] = gr.State(0)
            with gr.Row():
                f["_to_img2img"] = gr.Button("Send to img2img", size="sm", elem_id="extras_to_img2img")
                f["_to_inpaint"] = gr.Button("Send to inpaint", size="sm", elem_id="extras_to_inpaint")
            f["_info"] = gr.Textbox(
                label="Source parameters", lines=3, max_lines=12, interactive=False, elem_id="extras_info"
            )
    max_pixels = ctx.services.options.max_image_pixels

    def images_of(values: Mapping[str, Any]) -> dict[str, Any]:
        from webui.core.tasks.extras import NONE
        from webui.core.types import RequestError

        available = ctx.services.engine.extras_upscalers()
        for name in ("upscaler_1", "upscaler_2"):
            value = values.get(name)
            if value != NONE and value not in available:
                raise RequestError(name, f"{value!r} is not available any more; press Refresh upscalers")
        return load_images(str(values.get("_mode")), values.get("_image"), values.get("_batch"), max_pixels)

    runner = TabRunner(ctx, tab, f, job_state, extra=images_of, extra_inputs=("_image", "_batch", "_mode"))
    runner.wire()
    _wire_refresh(ctx, f)
    wire_gallery_select(runner.fields)
    single_tab.select(lambda: "single", None, f["_mode"], **QUIET)
    batch_tab.select(lambda: "batch", None, f["_mode"], **QUIET)

    def sent(path: str | None) -> tuple[Any, Any]:  # an image arrived ("Send to extras", upload): use it
        return (gr.update(selected="extras_single"), "single") if path else (gr.skip(), gr.skip())

    f["_image"].change(sent, f["_image"], [inner_tabs, f["_mode"]], **QUIET)

    def show(mode: int) -> tuple[Any, Any]:
        return gr.update(visible=mode != 1), gr.update(visible=mode == 1)

    f["resize_mode"].change(show, f["resize_mode"], [f["upscaling_resize"], size_row], **QUIET)
    return runner


def _wire_refresh(ctx: StudioContext, f: dict[str, Any]) -> None:
    def refresh(first: str, second: str) -> tuple[Any, Any]:
        names = ["None", *rescanned_upscaler_names(ctx)]  # model files added since start too
        return (
            gr.update(choices=names, value=first if first in names else "None"),
            gr.update(choices=names, value=second if second in names else "None"),
        )

    f["_refresh"].click(
        refresh, [f["upscaler_1"], f["upscaler_2"]], [f["upscaler_1"], f["upscaler_2"]], **QUIET
    )
