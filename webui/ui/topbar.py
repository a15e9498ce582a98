"""The top bar: checkpoint (with refresh), VAE, clip skip, the family's own controls; the first-run message.

A family's controls show only for a checkpoint of that family: "Distilled CFG Scale" (Forge's name and
range) for a guidance-distilled model (Flux dev), and Forge's "VAE / Text Encoder" picker (the files in
models/VAE and models/text_encoder a split model is assembled from; none picked: found by their usual
names) for SD3 and Flux. The model's family comes from the services
(`Services.checkpoint_family`), never from the model code directly.

The choices here are the *calling user's* settings for their next jobs (kept per user on the server,
sent with every Generate): switching a checkpoint never changes what another user is generating.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of

# the top bar's values that every generation tab sends with its request (request field names)
TOPBAR_FIELDS = ("checkpoint", "vae", "clip_skip", "distilled_cfg_scale", "modules")
DISTILLED_CFG_MAX = 30.0


def checkpoint_titles(ctx: StudioContext) -> list[str]:
    return [f.title for f in ctx.services.manager.checkpoints()]


def vae_names(ctx: StudioContext) -> list[str]:
    return ["Automatic", "None", *[f.name for f in ctx.services.manager.vaes()]]


def first_run_html(ctx: StudioContext) -> str:
    """What to do when there is no checkpoint at all (escaped paths)."""
    folders = "".join(f"<li><code>{html.escape(str(d))}</code></li>" for d in ctx.services.config.ckpt_dirs)
    return (
        "<div class='sf-first-run'><h3>No model found yet</h3>"
        "<p>Sfumato needs a Stable Diffusion checkpoint (<code>.safetensors</code> or <code>.ckpt</code>, "
        "or a diffusers folder). Put one in:</p>"
        f"<ul>{folders}</ul>"
        "<p>then press <b>↻</b> next to the checkpoint list.</p>"
        "<p>Already have AUTOMATIC1111? Start with <code>--data-dir /path/to/stable-diffusion-webui</code> "
        "to use its models, embeddings and styles.</p>"
        "<p>Just trying the app? Start with <code>--demo-model</code>: a tiny random-weight model that "
        "draws noise, not pictures, but exercises everything.</p></div>"
    )


DEMO_NOTE = (
    "<div class='sf-demo-note' role='note'><b>Demo model:</b> this checkpoint has random weights, so it "
    "draws coloured noise, not pictures. It is there to try every feature without downloading anything: "
    "put a real checkpoint in the models folder and press <b>↻</b>.</div>"
)


def model_note(title: str | None) -> Any:
    """The note under the top bar for the chosen checkpoint (the demo model's, or none)."""
    from webui.core.models.demo import is_demo

    demo = bool(title) and is_demo(str(title))
    return gr.update(value=DEMO_NOTE if demo else "", visible=demo)


def _resolve_title(ctx: StudioContext, value: str | None) -> str | None:
    titles = checkpoint_titles(ctx)
    if not titles:
        return None
    if value:
        hit = ctx.services.find_checkpoint(value)
        if hit is not None:
            return str(hit.title)
    return titles[0]


def shows_distilled_cfg(ctx: StudioContext, title: str | None) -> bool:
    """Whether the checkpoint takes a distilled guidance scale (Flux dev): its slider is shown then."""
    family = ctx.services.checkpoint_family(title or None)
    return family is not None and family.distilled_guidance


def shows_modules(ctx: StudioContext, title: str | None) -> bool:
    """Whether the checkpoint can be assembled from module files (SD3, Flux): the picker is shown then."""
    family = ctx.services.checkpoint_family(title or None)
    return family is not None and family.flow_matching


def _modules_update(ctx: StudioContext, title: str | None, value: list[str]) -> Any:
    """The picker over the files as they are now; hidden and empty for a model that takes no modules (so
    a hidden choice never reaches its requests)."""
    names = ctx.services.module_names()
    shown = shows_modules(ctx, title)
    return gr.update(choices=names, visible=shown, value=[v for v in value if v in names] if shown else [])


def build_topbar(ctx: StudioContext) -> dict[str, Any]:
    """Top bar components: {"checkpoint", "vae", "clip_skip", "_refresh", "_first_run"}."""
    f: dict[str, Any] = {}
    prefs = ctx.default_prefs()
    titles = checkpoint_titles(ctx)
    with gr.Row(elem_id="sf_topbar", equal_height=True):
        f["checkpoint"] = gr.Dropdown(
            titles, value=_resolve_title(ctx, prefs.checkpoint), label="Stable Diffusion checkpoint",
            elem_id="sf_checkpoint", scale=4, min_width=200, allow_custom_value=False,
        )  # fmt: skip
        f["_refresh"] = gr.Button("\u21bb", elem_id="sf_refresh", size="sm", scale=0, min_width=40)
        f["vae"] = gr.Dropdown(
            vae_names(ctx), value=prefs.vae if prefs.vae in vae_names(ctx) else "Automatic", label="SD VAE",
            elem_id="sf_vae", scale=2, min_width=160,
        )  # fmt: skip
        f["clip_skip"] = gr.Slider(
            1,
            12,
            value=prefs.clip_skip,
            step=1,
            label="Clip skip",
            elem_id="sf_clip_skip",
            scale=2,
            min_width=160,
        )
        f["distilled_cfg_scale"] = gr.Slider(
            0, DISTILLED_CFG_MAX, value=prefs.distilled_cfg_scale, step=0.1, label="Distilled CFG Scale",
            elem_id="sf_distilled_cfg", scale=2, min_width=160,
            visible=shows_distilled_cfg(ctx, _resolve_title(ctx, prefs.checkpoint)),
        )  # fmt: skip
        modular = shows_modules(ctx, _resolve_title(ctx, prefs.checkpoint))
        f["modules"] = gr.Dropdown(
            ctx.services.module_names(), value=list(prefs.modules) if modular else [], multiselect=True,
            label="VAE / Text Encoder", elem_id="sf_modules", scale=3, min_width=200, visible=modular,
        )  # fmt: skip
    from webui.ui.quicksettings import build_quicksettings

    # the other settings quicksettings_list may name: a row of their own (hidden controls in the row
    # above would still widen its form and wrap it), shown when the list names one of them
    with gr.Row(elem_id="sf_quicksettings", equal_height=True, visible=False) as quick_row:
        f["_quick"] = build_quicksettings(ctx)
    f["_quick_row"] = quick_row
    f["_first_run"] = gr.HTML(first_run_html(ctx), visible=not titles, elem_id="sf_first_run")
    f["_model_note"] = gr.HTML("", visible=False, elem_id="sf_model_note")
    return f


def wire_topbar(ctx: StudioContext, f: dict[str, Any]) -> None:
    def on_checkpoint(value: str | None, request: gr.Request) -> None:
        ctx.set_pref(user_of(request), checkpoint=value or None)

    def on_vae(value: str | None, request: gr.Request) -> None:
        ctx.set_pref(user_of(request), vae=value or "Automatic")

    def on_clip_skip(value: float, request: gr.Request) -> None:
        ctx.set_pref(user_of(request), clip_skip=int(value))

    def on_distilled(value: float, request: gr.Request) -> None:
        ctx.set_pref(user_of(request), distilled_cfg_scale=float(value))

    def on_modules(value: list[str] | None, request: gr.Request) -> None:
        ctx.set_pref(user_of(request), modules=tuple(value or ()))

    def family_controls(title: str | None, modules: list[str] | None) -> tuple[Any, Any, Any]:
        return (
            gr.update(visible=shows_distilled_cfg(ctx, title)),
            _modules_update(ctx, title, modules or []),
            model_note(title),
        )

    quiet: dict[str, Any] = dict(
        concurrency_limit=None, show_progress="hidden", api_visibility="private", queue=False
    )
    f["checkpoint"].input(on_checkpoint, f["checkpoint"], None, **quiet)
    f["vae"].input(on_vae, f["vae"], None, **quiet)
    f["clip_skip"].release(on_clip_skip, f["clip_skip"], None, **quiet)
    f["distilled_cfg_scale"].release(on_distilled, f["distilled_cfg_scale"], None, **quiet)
    # any change of checkpoint (picked, refreshed, page load, sent from PNG Info) shows its family's controls
    f["modules"].input(on_modules, f["modules"], None, **quiet)
    family = [f["distilled_cfg_scale"], f["modules"], f["_model_note"]]
    f["checkpoint"].change(family_controls, [f["checkpoint"], f["modules"]], family, **quiet)

    def refresh(current: str | None, modules: list[str] | None) -> tuple[Any, Any, Any, Any]:
        ctx.services.manager.refresh()
        titles = checkpoint_titles(ctx)
        value = _resolve_title(ctx, current)
        return (
            gr.update(choices=titles, value=value),
            gr.update(choices=vae_names(ctx)),
            _modules_update(ctx, value, modules or []),
            gr.update(value=first_run_html(ctx), visible=not titles),
        )

    page = [
        f["checkpoint"],
        f["vae"],
        f["clip_skip"],
        f["distilled_cfg_scale"],
        f["modules"],
        f["_first_run"],
        f["_refresh"],
    ]
    ctx.page_load.add(lambda request: load_prefs(ctx, request), page)
    from webui.ui.quicksettings import wire_quicksettings

    wire_quicksettings(ctx, f["_quick"], f["_quick_row"])
    f["_refresh"].click(
        refresh, [f["checkpoint"], f["modules"]], [f["checkpoint"], f["vae"], f["modules"], f["_first_run"]],
        concurrency_limit=None,
        api_visibility="private",
    )  # fmt: skip


def load_prefs(ctx: StudioContext, request: Any) -> tuple[Any, ...]:
    """The top bar as this user left it, over the model lists as they are now (page load); the
    checkpoint, VAE and clip skip show when quicksettings_list names them (webui.ui.quicksettings)."""
    from webui.ui.quicksettings import shown_keys

    listed = shown_keys(ctx)
    prefs = ctx.prefs(user_of(request))
    names = vae_names(ctx)
    titles = checkpoint_titles(ctx)
    title = _resolve_title(ctx, prefs.checkpoint)
    checkpoint = "sd_model_checkpoint" in listed
    return (
        gr.update(choices=titles, value=title, visible=checkpoint),
        gr.update(
            choices=names, value=prefs.vae if prefs.vae in names else "Automatic", visible="sd_vae" in listed
        ),
        gr.update(value=prefs.clip_skip, visible="CLIP_stop_at_last_layers" in listed),
        gr.update(value=prefs.distilled_cfg_scale, visible=shows_distilled_cfg(ctx, title)),
        _modules_update(ctx, title, list(prefs.modules)),
        gr.update(value=first_run_html(ctx), visible=not titles),
        gr.update(visible=checkpoint),
    )
