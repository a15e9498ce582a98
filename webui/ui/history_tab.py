"""The History tab: the calling user's recent jobs (state, prompt, images) and their images."""

from __future__ import annotations

import datetime
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of
from webui.ui.polling import caption

LIMIT = 50
HEADERS = ["When", "Kind", "State", "Images", "Prompt", "Job"]


def history_rows(ctx: StudioContext, user: str) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    rows: list[list[Any]] = []
    images: list[tuple[str, str]] = []
    for info in ctx.services.queue.list(owner=user, limit=LIMIT):
        when = datetime.datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M:%S")
        prompt = (
            str(info.request.get("prompt", "")) if info.kind != "extras" else _upscale_summary(info.request)
        )
        rows.append([when, info.kind, info.state.value, len(info.images), prompt[:200], info.id[:8]])
        images.extend((img.path, caption(info, img)) for img in info.images)
    return rows, images[:200]


def _upscale_summary(request: dict[str, Any]) -> str:
    """What an extras job did, for the History table (it has no prompt)."""
    n = len(request.get("images") or [])
    images = f"{n} image{'s' if n != 1 else ''}"
    if request.get("resize_mode") == 1:
        how = f"to {request.get('upscaling_resize_w')}x{request.get('upscaling_resize_h')}"
    else:
        how = f"x{request.get('upscaling_resize')}"
    return f"Upscale {images} {how} with {request.get('upscaler_1')}"


def build_history(ctx: StudioContext) -> dict[str, Any]:
    f: dict[str, Any] = {}
    f["_refresh"] = gr.Button("Refresh", elem_id="history_refresh", min_width=100)
    f["_table"] = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="history_table", wrap=True)
    f["_gallery"] = gr.Gallery(
        label="Your images", columns=6, height="auto", elem_id="history_gallery", interactive=False
    )

    def refresh(request: gr.Request) -> tuple[Any, Any]:
        rows, images = history_rows(ctx, user_of(request))
        return gr.update(value=rows or None), images

    f["_refresh"].click(
        refresh, None, [f["_table"], f["_gallery"]], concurrency_limit=None, api_visibility="private"
    )
    f["_load"] = refresh
    return f
