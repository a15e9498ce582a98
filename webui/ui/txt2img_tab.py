"""The txt2img tab: prompts, sampler, size, CFG, seeds, batch, hires fix; results with live progress."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui import widgets
from webui.ui.context import StudioContext
from webui.ui.extension_sections import build_sections
from webui.ui.library_panel import embedding_accordion
from webui.ui.lora_browser import lora_accordion
from webui.ui.pass_models_ui import hires_checkpoint, refiner_controls, wire_lists
from webui.ui.runner import TabRunner
from webui.ui.script_ui import build_scripts
from webui.ui.styles_editor import build_styles_editor
from webui.ui.topbar import TOPBAR_FIELDS


def upscaler_names(ctx: StudioContext) -> list[str]:
    """Every hires upscaler: the built-in ones and the extensions'."""
    names = getattr(ctx.services.engine, "upscaler_names", None)
    if callable(names):
        return list(names())
    from webui.core.tasks.hires import UPSCALERS

    return list(UPSCALERS)


SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"


def hires_controls(ctx: StudioContext, tab: str) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hires"):
        f["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix", elem_id=f"{tab}_enable_hr")
        with gr.Row():
            f["hr_upscaler"] = gr.Dropdown(
                upscaler_names(ctx),
                value="Latent",
                label="Upscaler",
                min_width=160,
                elem_id=f"{tab}_hr_upscaler",
            )
            f["hr_second_pass_steps"] = gr.Slider(
                0, 150, value=0, step=1, label="Hires steps", min_width=160, elem_id=f"{tab}_hr_steps"
            )
            f["denoising_strength"] = gr.Slider(
                0, 1, value=0.7, step=0.01, label="Denoising strength", min_width=160
            )
        with gr.Row():
            f["hr_scale"] = gr.Slider(
                1, 4, value=2, step=0.05, label="Upscale by", min_width=160, elem_id=f"{tab}_hr_scale"
            )
            f["hr_resize_x"] = gr.Slider(
                0,
                widgets.MAX_UI_SIZE,
                value=0,
                step=8,
                label="Resize width to",
                min_width=160,
                elem_id=f"{tab}_hr_resize_x",
            )
            f["hr_resize_y"] = gr.Slider(
                0, widgets.MAX_UI_SIZE, value=0, step=8, label="Resize height to", min_width=160
            )
        f["_hr_target"] = gr.HTML(
            hr_target_html(512, 512, 2, 0, 0), elem_id=f"{tab}_hr_target", padding=False
        )
        from webui.core.sampling.samplers import list_schedulers

        with gr.Row():
            f["hr_sampler_name"] = gr.Dropdown(
                [SAME_SAMPLER, *widgets.sampler_names(ctx)],
                value=SAME_SAMPLER,
                label="Hires sampling method",
                min_width=160,
                elem_id=f"{tab}_hr_sampler",
            )
            f["hr_scheduler"] = gr.Dropdown(
                [SAME_SCHEDULER, *(s["label"] for s in list_schedulers())],
                value=SAME_SCHEDULER,
                label="Hires schedule type",
                min_width=160,
                elem_id=f"{tab}_hr_scheduler",
            )
        with gr.Row():
            f.update(hires_checkpoint(ctx, tab))
        with gr.Row():
            f["hr_prompt"] = gr.Textbox(
                "", lines=2, label="Hires prompt", placeholder="empty: the prompt", elem_id=f"{tab}_hr_prompt"
            )
            f["hr_negative_prompt"] = gr.Textbox(
                "", lines=2, label="Hires negative prompt", placeholder="empty: the negative prompt",
                elem_id=f"{tab}_hr_negative_prompt",
            )  # fmt: skip
    return f


def hr_target_html(width: float, height: float, scale: float, resize_x: float, resize_y: float) -> str:
    """ "from 512x512 to 1024x1024": the size the hires pass makes (A1111's rules, webui.core.sizes)."""
    from webui.core.sizes import hires_target

    try:
        w, h = hires_target(int(width), int(height), float(scale), int(resize_x), int(resize_y)).size
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return f"<div class='sf-hint'>Hires fix: from {int(width)}x{int(height)} to <b>{w}x{h}</b></div>"


def wire_hr_target(f: dict[str, Any]) -> None:
    """Keep the hires target line true to the size, scale and resize controls. One listener for all five
    controls with trigger_mode="always_last": the browser sends one request at a time and a last one with
    the values shown, so a slow answer for an older value can never land after the newest one."""
    names = ("width", "height", "hr_scale", "hr_resize_x", "hr_resize_y")
    inputs = [f[n] for n in names]
    gr.on(
        [f[n].change for n in names], hr_target_html, inputs, f["_hr_target"], queue=False,
        show_progress="hidden", api_visibility="private", trigger_mode="always_last",
    )  # fmt: skip


def extension_area(tab: str) -> Any:
    """The column the extension accordions and the Script dropdown go in."""
    return gr.Column(elem_id=f"{tab}_extensions", elem_classes="sf-extensions")


def build_txt2img(ctx: StudioContext, topbar: dict[str, Any], job_state: Any) -> TabRunner:
    tab = "txt2img"
    f: dict[str, Any] = {}
    f["_infotexts"] = gr.State([])
    f["_seeds"] = gr.State([])
    f.update(widgets.prompt_area(ctx, tab))
    lora_accordion(ctx, tab, ctx.lora_thumbs)
    embedding_accordion(ctx, tab)
    build_styles_editor(ctx, tab, f)
    with gr.Row(elem_classes="sf-main-row"):
        with gr.Column(scale=1, min_width=200, elem_classes="sf-settings"):
            f.update(widgets.sampler_controls(ctx, tab))
            f.update(widgets.size_controls(tab))
            f.update(widgets.batch_and_cfg(tab))
            f.update(widgets.seed_controls(tab))
            f.update(widgets.face_controls(tab))
            f.update(hires_controls(ctx, tab))
            f.update(refiner_controls(ctx, tab))
            with extension_area(tab):
                extensions = build_sections(ctx, tab)
                scripts = build_scripts(ctx, tab)
        with gr.Column(scale=1, min_width=200, elem_classes="sf-results"):
            f.update(widgets.results_column(tab))
    for name in TOPBAR_FIELDS:
        f[name] = topbar[name]
    wire_hr_target(f)
    wire_lists(ctx, topbar, f)
    runner = TabRunner(ctx, "txt2img", f, job_state, extensions=extensions, scripts=scripts)
    runner.wire()
    return runner
