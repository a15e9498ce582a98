"""The Models tab: checkpoints, VAEs, text encoders and embeddings with hash, family, size; search, refresh.

Listing reads only the scan (names, sizes, cached hashes): thousands of files list at once. The family
of the rows shown (at most MAX_ROWS) comes from the services (a safetensors header or a diffusers
folder's configs, remembered per file).
Below the table, the model library (cards of every kind with their notes; webui.ui.library_panel),
the LoRA browser (cards with search; webui.ui.lora_browser) and the checkpoint
merger (webui.ui.merger_panel), and the Download panel (webui.ui.download_panel).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.context import StudioContext
from webui.ui.download_panel import build_downloads
from webui.ui.library_panel import build_library
from webui.ui.lora_browser import build_lora_browser
from webui.ui.merger_panel import build_merger

MAX_ROWS = 200
HEADERS = ["Kind", "Name", "Hash", "Architecture", "Size (MiB)"]


def model_rows(ctx: StudioContext, query: str) -> tuple[list[list[Any]], str]:
    manager = ctx.services.manager
    q = (query or "").strip().lower()
    items: list[tuple[str, Any]] = [("checkpoint", f) for f in manager.checkpoints()]
    items += [("VAE", f) for f in manager.vaes()]
    items += [("text encoder", f) for f in manager.text_encoders()]
    try:
        library = ctx.services.engine.embeddings.library()
        embeddings = list(library.loaded.values())
    except Exception:
        embeddings = []
    rows: list[list[Any]] = []
    matched = 0
    for kind, f in items:
        if q and q not in f.name.lower() and q not in (f.sha256 or "").lower():
            continue
        matched += 1
        if len(rows) < MAX_ROWS:
            arch = ctx.services.checkpoint_label(f) if kind == "checkpoint" else ""
            rows.append([kind, f.name, f.shorthash or "", arch, round(f.size / 2**20, 1)])
    for e in embeddings:
        name = str(getattr(e, "name", ""))
        if q and q not in name.lower():
            continue
        matched += 1
        if len(rows) < MAX_ROWS:
            width = getattr(e, "shape", "")
            rows.append(["embedding", name, getattr(e, "shorthash", "") or "", f"width {width}", ""])
    shown = f"{matched} match{'es' if matched != 1 else ''}" + (
        f", first {MAX_ROWS} shown" if matched > MAX_ROWS else ""
    )
    return rows, shown


def build_models(ctx: StudioContext) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        f["_search"] = gr.Textbox(
            label="Search (name or hash)", elem_id="models_search", scale=4, min_width=200
        )
        f["_refresh"] = gr.Button("Refresh", elem_id="models_refresh", scale=1, min_width=100)
    f["_count"] = gr.Textbox("", label="Found", interactive=False, elem_id="models_count", lines=1)
    f["_table"] = gr.Dataframe(  # rows: read when the page opens
        [], headers=HEADERS, datatype=["str", "str", "str", "str", "number"], interactive=False,
        elem_id="models_table", wrap=True,
    )  # fmt: skip
    with gr.Column(elem_id="models_library", elem_classes="sf-extensions"):
        f["_library"] = build_library(ctx)
    with gr.Column(elem_id="models_lora", elem_classes="sf-extensions"):
        gr.Markdown("### LoRA")
        build_lora_browser(ctx, "", ctx.lora_thumbs)
    merger = build_merger(ctx)
    f["_downloads"] = build_downloads(ctx)

    def search(query: str) -> tuple[Any, str]:
        found, text = model_rows(ctx, query)
        return gr.update(value=found), text

    def refresh(query: str) -> tuple[Any, str]:
        ctx.services.manager.refresh()
        return search(query)

    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private")
    ctx.page_load.add(lambda _request: search(""), [f["_table"], f["_count"]])
    f["_search"].change(search, f["_search"], [f["_table"], f["_count"]], trigger_mode="always_last", **quiet)
    f["_refresh"].click(refresh, f["_search"], [f["_table"], f["_count"]], **quiet)
    f["_merger"] = merger
    return f
