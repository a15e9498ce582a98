"""`build_studio(services)`: the whole Gradio studio (tabs, top bar, reattach on load) and how to mount it.

Returns a `Studio`: the Blocks and the keyword arguments `gr.mount_gradio_app` needs (CSS, the
Ctrl+Enter script, run history off, the folders Gradio may serve images from). The theme is each user's
choice (light, dark, or the system's preference: webui.ui.ui_prefs, js/theme.js); Ctrl+Up/Down in a
prompt changes attention weights (js/edit_attention.js).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of
from webui.ui.polling import Frame, follow, info_html
from webui.ui.widgets import ICON_LABELS

DELETE_CACHE = (600, 3600)  # every 10 minutes, delete Gradio cache files older than an hour
JOB_STORAGE_KEY = "sfumato_job"

CSS = """
/* WCAG AA (4.5:1) text in both themes: Gradio's subdued grey (slider ends, placeholders, "- or -") and
   its orange (selected tab, primary buttons' white text) are below it; tests/browser/test_accessibility */
:root, .gradio-container { --body-text-color-subdued: #6b7280; --input-placeholder-color: #6b7280;
  --color-accent: #c2410c; --button-primary-background-fill: #c2410c;
  --button-primary-background-fill-hover: #9a3412; --button-primary-text-color: #ffffff;
  --button-primary-text-color-hover: #ffffff; }
.dark, .dark .gradio-container { --body-text-color-subdued: #9ca3af; --input-placeholder-color: #9ca3af;
  --color-accent: #fb923c; --button-primary-background-fill: #c2410c;
  --button-primary-background-fill-hover: #9a3412; --button-primary-text-color: #ffffff;
  --color-grey-500: #a1a1aa; }
.sf-status { margin: 4px 0; }
.sf-bar { height: 6px; border-radius: 3px; background: var(--neutral-200); overflow: hidden; }
.dark .sf-bar { background: var(--neutral-700); }
.sf-fill { height: 100%; background: var(--color-accent); transition: width .2s; }
.sf-error .sf-fill { background: var(--error-text-color, #d33); }
.sf-text { font-size: var(--text-sm); padding-top: 2px; overflow-wrap: anywhere; }
.sf-error .sf-text { color: var(--error-text-color, #d33); }
.sf-warnings { border: 1px solid #b45309; border-radius: 8px; padding: 6px 12px; margin: 4px 0;
  background: #fffbeb; color: #78350f; font-size: var(--text-sm); overflow-wrap: anywhere; }
.dark .sf-warnings { background: #451a03; color: #fde68a; border-color: #d97706; }
.sf-warnings ul { margin: 2px 0 0 1.2em; padding: 0; }
.sf-tokens { display: block; text-align: right; font-size: var(--text-xs); opacity: .7; margin-top: -6px; }
.sf-first-run { border: 1px solid var(--color-accent); border-radius: 8px; padding: 8px 16px; }
.sf-first-run code { overflow-wrap: anywhere; }
.sf-hint { font-size: var(--text-sm); opacity: .85; padding: 2px 4px; }
.sf-demo-note { border-left: 4px solid var(--color-accent); padding: 4px 12px; font-size: var(--text-sm); }
#sf_topbar { align-items: end; }
[role=listbox].sf-closed { display: none !important; }
.sf-preview .image-container, .sf-preview button, .sf-preview .image-frame { max-width: 100%; }
.sf-preview img { max-width: 100%; max-height: calc(100vh - 120px); width: auto; height: auto;
  object-fit: contain; }
.sf-busy button[id$="_generate"] { display: none !important; }
.sf-busy button[id$="_interrupt"], .sf-busy button[id$="_skip"] { min-height: 44px; font-weight: 600; }
.gradio-container { max-width: 1600px !important; }
@media (max-width: 600px) { .gradio-container { padding: 4px !important; } }
"""

# Ctrl+Enter (Cmd+Enter) in a tab's prompt clicks that tab's Generate button; while a job of the shown
# tab runs, Esc clicks its Interrupt and Alt+Enter its Skip (A1111's keys).
# While a tab's job is queued or running (its status carries data-busy), Generate gives way to Interrupt
# and Skip, as in A1111, and the window title shows the progress: "[42%] ETA 12.0 s - Sfumato".
HEAD = """
<script>
(() => {
  const busyTab = () => {
    for (const status of document.querySelectorAll('[id$="_status"] .sf-status[data-busy]')) {
      const holder = status.closest('[id$="_status"]');
      if (holder && holder.offsetParent !== null) return holder.id.replace(/_status$/, '');
    }
    return null;
  };
  // when the focus moves on (Tab), a dropdown left behind hides its list (Gradio leaves it open); the
  // list shows again when its own input has the focus
  document.addEventListener('focusin', (e) => {
    document.querySelectorAll('[role=listbox]').forEach((list) => {
      const input = list.id && document.querySelector(`[aria-controls="${CSS.escape(list.id)}"]`);
      if (input) list.classList.toggle('sf-closed', input !== e.target);
    });
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      const box = e.target.closest && e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]');
      if (!box) return;
      const tab = box.id.replace(/_(neg_)?prompt$/, '');
      const button = document.getElementById(tab + '_generate');
      if (button) { e.preventDefault(); button.click(); }
      return;
    }
    const skip = e.key === 'Enter' && e.altKey;
    if (e.key !== 'Escape' && !skip) return;
    const tab = busyTab();
    const button = tab && document.getElementById(tab + (skip ? '_skip' : '_interrupt'));
    if (button) { e.preventDefault(); button.click(); }
  });
  const BASE = 'Sfumato';
  const LABELS = %LABELS%;
  const name = () => {
    for (const button of document.querySelectorAll('button:not([aria-label])')) {
      const label = LABELS[button.textContent.trim()];
      if (label) { button.setAttribute('aria-label', label); button.title = label; }
    }
  };
  // a slider is one Tab stop, its number box (the box takes typed values and arrow keys); the range
  // and its reset button stay usable with the mouse
  const oneStop = () => {
    const extra = 'input[type=range][data-testid="range-input"], button[data-testid="reset-button"]';
    document.querySelectorAll(extra)
      .forEach((el) => { if (el.tabIndex !== -1) el.tabIndex = -1; });
  };
  const update = () => {
    name();
    oneStop();
    let title = null;
    document.querySelectorAll('[id$="_status"]').forEach((holder) => {
      const tab = holder.id.replace(/_status$/, '');
      const status = holder.querySelector('.sf-status');
      const busy = !!(status && status.dataset.busy);
      const button = document.getElementById(tab + '_generate');
      const actions = button && (button.closest('.sf-actions') || button.parentElement);
      if (actions) actions.classList.toggle('sf-busy', busy);
      if (busy && title === null) {
        const eta = (status.textContent.match(/ETA ([^,)]+)/) || [])[1];
        title = '[' + status.dataset.pct + '%]' + (eta ? ' ETA ' + eta : '') + ' - ' + BASE;
      }
    });
    const want = title || BASE;
    if (document.title !== want) document.title = want;
    showPreview();
  };
  // the live preview, when it first shows for a job, is scrolled into sight if it is not (laptop, phone)
  const showPreview = () => {
    document.querySelectorAll('[id$="_preview"].sf-preview').forEach((holder) => {
      const img = holder.querySelector('img');
      if (holder.offsetParent === null || !img || !img.complete || !img.naturalWidth) {
        if (holder.offsetParent === null) delete holder.dataset.sfSeen;
        return;
      }
      if (holder.dataset.sfSeen) return;
      holder.dataset.sfSeen = '1';
      const box = img.getBoundingClientRect();
      if (box.top >= 0 && box.bottom <= window.innerHeight) return;
      const status = document.getElementById(holder.id.replace(/_preview$/, '_status'));
      (status || holder).scrollIntoView({block: 'start'});
    });
  };
  let pending = false;
  const soon = () => {
    if (!pending) { pending = true; setTimeout(() => { pending = false; update(); }, 100); }
  };
  const start = () => new MutationObserver(soon).observe(document.body,
    {childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ['data-busy']});
  document.addEventListener('load', (e) => {
    if (e.target.closest && e.target.closest('.sf-preview')) soon();
  }, true);
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
</script>
""".replace("%LABELS%", json.dumps(ICON_LABELS))

JS_DIR = Path(__file__).with_name("js")
JS_FILES = ("theme.js", "edit_attention.js")  # theme.js first: it sets the theme before anything draws


def scripts_head() -> str:
    """The browser scripts of webui/ui/js, inline in the page's <head>."""
    return "".join(f"<script>\n{(JS_DIR / name).read_text(encoding='utf-8')}</script>\n" for name in JS_FILES)


@dataclass
class Studio:
    blocks: Any  # gr.Blocks
    context: StudioContext
    mount_options: dict[str, Any] = field(default_factory=dict)


def build_studio(services: Any, *, secret: str | None = None) -> Studio:
    from webui.ui import (
        accounts_tab,
        extensions_tab,
        extras_tab,
        gallery_tab,
        history_tab,
        img2img_tab,
        models_tab,
        pnginfo_tab,
        sendto,
        settings_tab,
        styles_editor,
        txt2img_tab,
        widgets,
    )
    from webui.ui.topbar import build_topbar, wire_topbar
    from webui.ui.ui_prefs import apply_defaults

    ctx = StudioContext(services, secret)
    runners: dict[str, Any] = {}
    with gr.Blocks(
        title="Sfumato", analytics_enabled=False, delete_cache=DELETE_CACHE, fill_width=True
    ) as blocks:
        job_state = gr.BrowserState(None, storage_key=JOB_STORAGE_KEY, secret=ctx.secret)
        topbar = build_topbar(ctx)
        wire_topbar(ctx, topbar)
        with gr.Tabs(elem_id="sf_tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img") as txt2img_block:
                runners["txt2img"] = txt2img_tab.build_txt2img(ctx, topbar, job_state)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img") as img2img_block:
                runners["img2img"] = img2img_tab.build_img2img(ctx, topbar, job_state)
            with gr.Tab("Inpaint", id="inpaint", elem_id="tab_inpaint") as inpaint_block:
                runners["inpaint"] = img2img_tab.build_inpaint(ctx, topbar, job_state)
            # ui-config.json's defaults for the generation tabs' controls (A1111's keys)
            ctx.ui_defaults = apply_defaults(
                ctx, {"txt2img": txt2img_block, "img2img": img2img_block, "inpaint": inpaint_block}
            )
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                runners["extras"] = extras_tab.build_extras(ctx, job_state)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo = pnginfo_tab.build_pnginfo(ctx)
            with gr.Tab("Models", id="models", elem_id="tab_models"):
                models_tab.build_models(ctx)
            with gr.Tab("History", id="history", elem_id="tab_history") as history_tab_block:
                history = history_tab.build_history(ctx)
            with gr.Tab("Gallery", id="gallery", elem_id="tab_gallery") as gallery_tab_block:
                gallery = gallery_tab.build_gallery(ctx)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                extensions_tab.build_extensions(ctx)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab.build_settings(ctx)
            accounts_tab.build_accounts_tab(ctx)  # admins of a server with a login
        styles_editor.wire_style_pickers(ctx)
        for runner in runners.values():
            if "prompt" in runner.fields:  # the generation tabs (not Extras)
                widgets.wire_common(ctx, runner.fields)
        sendto.wire_sendto(ctx, runners, tabs, pnginfo)
        history_tab.wire_history_actions(ctx, history, runners, tabs)
        history_tab_block.select(
            history["_load"], None, history["_view"], concurrency_limit=None, api_visibility="private"
        )
        gallery_tab.wire_gallery_actions(ctx, gallery, runners, tabs)
        gallery_tab_block.select(
            gallery["_load"], gallery["_load_inputs"], gallery["_load_outputs"],
            concurrency_limit=None, api_visibility="private",
        )  # fmt: skip

        from webui.ui.last_params import wire_last_params

        wire_last_params(ctx, runners)  # a reload keeps each tab's prompt and settings
        ctx.page_load.wire(blocks)
        _wire_reattach(ctx, blocks, runners, job_state, tabs)
    folders = [
        str(services.config.outputs_dir),
        str(getattr(services.queue, "files_dir", services.config.outputs_dir)),
    ]
    from webui.ui.library_panel import CSS as LIBRARY_CSS
    from webui.ui.library_panel import LIBRARY_SCRIPT
    from webui.ui.lora_browser import CARD_SCRIPT
    from webui.ui.lora_browser import CSS as LORA_CSS

    options = dict(
        run_history=False, allowed_paths=folders, css=CSS + LORA_CSS + LIBRARY_CSS,
        head=scripts_head() + HEAD + CARD_SCRIPT + LIBRARY_SCRIPT, footer_links=[],
    )  # fmt: skip
    return Studio(blocks, ctx, options)


def tab_of(info: Any) -> str:
    """Which tab shows a job's results."""
    if info.kind == "extras":
        return "extras"
    if info.kind == "img2img":
        return "inpaint" if info.request.get("mask") else "img2img"
    return "txt2img"


def _wire_reattach(
    ctx: StudioContext, blocks: Any, runners: dict[str, Any], job_state: Any, tabs: Any
) -> None:
    """On page load: find this user's job (browser hint checked against the owner, else the server's
    map) and stream it into its tab, so a reload mid-job picks the progress up again."""
    order = list(runners)
    outputs: list[Any] = [tabs]
    for name in order:
        outputs.extend(runners[name].result_components)

    def reattach(hint: str | None, request: gr.Request) -> Iterator[tuple[Any, ...]]:
        user = user_of(request)
        info = ctx.job_for(user, hint if isinstance(hint, str) else None)
        if info is None:
            return
        target = tab_of(info)
        if target not in runners:
            return
        from webui.ui.runner import RESULT_OUTPUTS, frame_outputs

        def place(frame: Frame, first: bool) -> tuple[Any, ...]:
            out: list[Any] = [gr.update(selected=target) if first else gr.skip()]
            for name in order:
                out.extend(frame_outputs(frame) if name == target else [gr.skip()] * RESULT_OUTPUTS)
            return tuple(out)

        yield place(Frame(info_html(info)), not info.state.finished)
        for frame in follow(ctx.services.queue, info.id):
            yield place(frame, False)

    blocks.load(
        reattach, job_state, outputs, concurrency_limit=None, show_progress="hidden", api_visibility="private"
    )
