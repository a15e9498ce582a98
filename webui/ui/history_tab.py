"""The History tab: the calling user's recent jobs, each row opening its images with the result actions
(infotext, send to img2img / inpaint / extras, reuse parameters in txt2img, delete the job and its files).

With no row chosen, the gallery shows the images of all the listed jobs; choosing a row shows that job's.
"""

from __future__ import annotations

import datetime
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of
from webui.ui.polling import caption

LIMIT = 50
MAX_IMAGES = 200
HEADERS = ["When", "Kind", "State", "Images", "Prompt", "Job"]


def history_rows(ctx: StudioContext, user: str) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    rows, images, _, _ = history_view(ctx, user)
    return rows, images


def history_view(
    ctx: StudioContext, user: str, job_id: str | None = None
) -> tuple[list[list[Any]], list[tuple[str, str]], list[str], list[str]]:
    """(table rows, gallery items, each item's infotext, the rows' job ids); `job_id`: that job's
    images only."""
    rows: list[list[Any]] = []
    images: list[tuple[str, str]] = []
    infotexts: list[str] = []
    ids: list[str] = []
    for info in ctx.services.queue.list(owner=user, limit=LIMIT):
        when = datetime.datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M:%S")
        if info.kind == "download":
            prompt = f"Download {info.request.get('url', '')}"
        elif info.kind == "extras":
            prompt = _upscale_summary(info.request)
        else:
            prompt = str(info.request.get("prompt", ""))
        rows.append([when, info.kind, info.state.value, len(info.images), prompt[:200], info.id[:8]])
        ids.append(info.id)
        if job_id is None or info.id == job_id:
            for img in info.images:
                images.append((img.path, caption(info, img)))
                infotexts.append(img.infotext)
    return rows, images[:MAX_IMAGES], infotexts[:MAX_IMAGES], ids


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
    f["_job_ids"] = gr.State([])  # the rows' job ids, in order
    f["_job"] = gr.State(None)  # the chosen row's job id (None: all jobs' images)
    f["_infotexts"] = gr.State([])
    f["_selected"] = gr.State(0)
    f["_gallery"] = gr.Gallery(
        label="Your images (choose a row to see one job's)", columns=6, height="auto",
        elem_id="history_gallery", interactive=False, type="filepath",
    )  # fmt: skip
    with gr.Row():
        for key, label in (
            ("_reuse", "Reuse parameters"),
            ("_to_img2img", "Send to img2img"),
            ("_to_inpaint", "Send to inpaint"),
            ("_to_extras", "Send to extras"),
        ):
            f[key] = gr.Button(label, size="sm", elem_id=f"history_{key.removeprefix('_')}", min_width=100)
        f["_delete"] = gr.Button(
            "Delete job", size="sm", variant="stop", elem_id="history_delete", min_width=100
        )
    with gr.Row(visible=False, elem_id="history_confirm") as f["_confirm_row"]:
        f["_confirm_text"] = gr.Markdown("")
        f["_confirm"] = gr.Button("Delete it", size="sm", variant="stop", elem_id="history_delete_confirm")
        f["_cancel"] = gr.Button("Keep it", size="sm", elem_id="history_delete_cancel")
    f["_status"] = gr.Markdown("", elem_id="history_status")
    f["_info"] = gr.Textbox(
        label="Generation info", lines=4, max_lines=12, interactive=False, elem_id="history_info",
        buttons=["copy"],
    )  # fmt: skip
    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
    view = [f["_table"], f["_gallery"], f["_infotexts"], f["_job_ids"], f["_job"], f["_info"], f["_selected"]]

    def show(user: str, job_id: str | None) -> tuple[Any, ...]:
        rows, images, infotexts, ids = history_view(ctx, user, job_id)
        job_id = job_id if job_id in ids else None
        first = infotexts[0] if infotexts else ""
        return gr.update(value=rows or None), images, infotexts, ids, job_id, first, 0

    def refresh(request: gr.Request) -> tuple[Any, ...]:
        return show(user_of(request), None)

    def pick_row(ids: list[str], evt: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        job_id = ids[row] if isinstance(row, int) and 0 <= row < len(ids) else None
        return show(user_of(request), job_id)

    f["_refresh"].click(refresh, None, view, **quiet)
    f["_table"].select(pick_row, f["_job_ids"], view, **quiet)

    def ask(job_id: str | None) -> tuple[Any, Any, Any]:
        if not job_id:
            return gr.skip(), gr.skip(), "Choose a job's row first."
        text = f"Delete job **{job_id[:8]}** and its image files from disk?"
        return gr.update(visible=True), text, ""

    def delete(job_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        from webui.core.jobs import JobNotFound, NotAllowed, NotFinished

        user = user_of(request)
        try:
            removed = ctx.services.queue.delete(job_id, by=user) if job_id else 0
        except (JobNotFound, NotAllowed, NotFinished) as e:
            return (*show(user, job_id), f"Not deleted: {e}")
        return (*show(user, None), f"Deleted job {str(job_id)[:8]} ({removed} files)")

    hide = lambda: gr.update(visible=False)  # noqa: E731
    f["_delete"].click(ask, f["_job"], [f["_confirm_row"], f["_confirm_text"], f["_status"]], **quiet)
    f["_cancel"].click(hide, None, f["_confirm_row"], **quiet)
    f["_confirm"].click(hide, None, f["_confirm_row"], **quiet).then(
        delete, f["_job"], [*view, f["_status"]], **quiet
    )
    f["_load"] = refresh
    f["_view"] = view
    return f


def wire_history_actions(ctx: StudioContext, f: dict[str, Any], runners: dict[str, Any], tabs: Any) -> None:
    """Reuse parameters (in txt2img), send to img2img / inpaint / extras: as from a generation tab."""
    from webui.ui.sendto import _image_from_gallery, wire_result_actions
    from webui.ui.widgets import wire_gallery_select

    wire_gallery_select(f)
    wire_result_actions(ctx, f, runners, tabs, [f["_gallery"], f["_selected"]], _image_from_gallery)
