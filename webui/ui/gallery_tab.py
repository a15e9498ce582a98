"""The Gallery tab: every image under outputs/ (webui.core.outputs.gallery), newest first, searchable by
prompt words, model and folder, a page at a time ("Load more"), with the result actions: infotext,
reuse parameters (txt2img), send to img2img / inpaint / extras, download, and delete (to the trash).

Who sees what follows `/api/v1/images` (gallery_api.viewer_filter): everything without a login, else
an admin everything and others their own and shared images.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of

PAGE = 48
ALL = "(all)"


def build_gallery(ctx: StudioContext) -> dict[str, Any]:
    from webui.api.gallery_api import viewer_filter
    from webui.core.outputs.gallery import Filters
    from webui.core.types import RequestError

    gallery = ctx.services.gallery
    f: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        f["_query"] = gr.Textbox(
            label="Search prompts", placeholder="words of the prompt or negative prompt",
            elem_id="gallery_query", scale=4, min_width=200,
        )  # fmt: skip
        f["_model"] = gr.Dropdown(
            [ALL], value=ALL, label="Model", elem_id="gallery_model", scale=2, min_width=140
        )
        f["_folder"] = gr.Dropdown(
            [ALL], value=ALL, label="Folder", elem_id="gallery_folder", scale=2, min_width=140
        )
        f["_search"] = gr.Button("Search", variant="primary", elem_id="gallery_search", scale=0, min_width=90)
        f["_rescan"] = gr.Button("Rescan folder", elem_id="gallery_rescan", scale=0, min_width=110)
    f["_items"] = gr.State([])  # [image id, path, infotext] per shown image
    f["_cursor"] = gr.State(None)
    f["_selected"] = gr.State(0)
    f["_gallery"] = gr.Gallery(
        label="Images", columns=6, height="auto", elem_id="gallery_images", interactive=False,
        type="filepath", preview=False,
    )  # fmt: skip
    f["_more"] = gr.Button("Load more", elem_id="gallery_more", visible=False)
    with gr.Row():
        for key, label in (
            ("_reuse", "Reuse parameters"),
            ("_to_img2img", "Send to img2img"),
            ("_to_inpaint", "Send to inpaint"),
            ("_to_extras", "Send to extras"),
        ):
            f[key] = gr.Button(label, size="sm", elem_id=f"gallery_{key.removeprefix('_')}", min_width=100)
        f["_download"] = gr.DownloadButton("Download", size="sm", elem_id="gallery_download", min_width=100)
        f["_delete"] = gr.Button("Delete", size="sm", variant="stop", elem_id="gallery_delete", min_width=90)
    with gr.Row(visible=False, elem_id="gallery_confirm") as f["_confirm_row"]:
        f["_confirm_text"] = gr.Markdown("")
        f["_confirm"] = gr.Button(
            "Move to trash", size="sm", variant="stop", elem_id="gallery_delete_confirm"
        )
        f["_cancel"] = gr.Button("Keep it", size="sm", elem_id="gallery_delete_cancel")
    f["_status"] = gr.Markdown("", elem_id="gallery_status")
    f["_info"] = gr.Textbox(
        label="Generation info", lines=4, max_lines=12, interactive=False, elem_id="gallery_info",
        buttons=["copy"],
    )  # fmt: skip
    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")

    def fetch(query: str, model: str, folder: str, cursor: str | None, user: str) -> tuple[list[Any], Any]:
        queue = ctx.services.queue
        gallery.sync_jobs(queue.finished_images, str(getattr(queue, "db_path", "jobs")))
        filters = Filters(
            query=query or "",
            model="" if model in (None, ALL) else model,
            folder="" if folder in (None, ALL) else folder,
            owner=viewer_filter(ctx.services, user),
        )
        page = gallery.page(filters, cursor, PAGE)
        items = [[i.id, str(gallery.file(i)), gallery.infotext(i.id)] for i in page.images]
        return items, page.next_cursor

    def show(items: list[Any], cursor: str | None, note: str = "") -> tuple[Any, ...]:
        pictures = [(path, None) for _, path, _ in items]
        first = items[0][2] if items else ""
        count = f"{len(items)} images" + (" (more below)" if cursor else "")
        status = note or (count if items else "No images")
        return (
            items,
            cursor,
            pictures,
            gr.update(visible=cursor is not None),
            first,
            0,
            status,
            _download(items, 0),
        )

    def _download(items: list[Any], index: int) -> Any:
        return gr.update(value=items[index][1] if 0 <= index < len(items) else None)

    view = [
        f["_items"], f["_cursor"], f["_gallery"], f["_more"], f["_info"], f["_selected"], f["_status"],
        f["_download"],
    ]  # fmt: skip
    filters = [f["_query"], f["_model"], f["_folder"]]

    def choices() -> tuple[Any, Any]:
        folders = sorted({i.folder for i in gallery.page(Filters(), None, 500).images if i.folder})
        return (
            gr.update(choices=[ALL, *gallery.models()]),
            gr.update(choices=[ALL, *folders]),
        )

    def search(query: str, model: str, folder: str, request: gr.Request) -> tuple[Any, ...]:
        try:
            items, cursor = fetch(query, model, folder, None, user_of(request))
        except RequestError as e:
            return (*show([], None, f"{e.field}: {e}"), gr.skip(), gr.skip())
        return (*show(items, cursor), *choices())

    def more(
        query: str, model: str, folder: str, items: list[Any], cursor: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        if cursor is None:
            return show(items, None)
        added, cursor = fetch(query, model, folder, cursor, user_of(request))
        return show(items + added, cursor)

    def rescan(query: str, model: str, folder: str, request: gr.Request) -> tuple[Any, ...]:
        report = gallery.scan()
        out = search(query, model, folder, request)
        note = f"Rescanned: {report.files} images ({report.added} new, {report.removed} gone)"
        return (*out[:6], note, *out[7:])

    def select(items: list[Any], evt: gr.SelectData) -> tuple[Any, Any, Any]:
        index = int(evt.index) if isinstance(evt.index, int) else 0
        info = items[index][2] if 0 <= index < len(items) else ""
        return index, info, _download(items, index)

    outputs = [*view, f["_model"], f["_folder"]]
    f["_search"].click(search, filters, outputs, **quiet)
    f["_query"].submit(search, filters, outputs, **quiet)
    f["_rescan"].click(rescan, filters, outputs, **quiet)
    f["_more"].click(more, [*filters, f["_items"], f["_cursor"]], view, **quiet)
    f["_gallery"].select(select, f["_items"], [f["_selected"], f["_info"], f["_download"]], **quiet)

    def ask(items: list[Any], index: int) -> tuple[Any, Any]:
        if not 0 <= index < len(items):
            return gr.skip(), "Choose an image first."
        return gr.update(visible=True), f"Move **{items[index][1]}** to the trash?"

    def delete(
        query: str, model: str, folder: str, items: list[Any], index: int, request: gr.Request
    ) -> tuple[Any, ...]:
        user = user_of(request)
        image = gallery.get(items[index][0]) if 0 <= index < len(items) else None
        owner = viewer_filter(ctx.services, user)
        if image is None:
            note = "That image is gone already."
        elif owner is not None and image.owner != user:
            note = "Only its owner or an admin may delete this image."
        else:
            gallery.trash(image)
            note = f"Moved {image.path} to the trash"
        out = search(query, model, folder, request)
        return (*out[:6], note, *out[7:])

    hide = lambda: gr.update(visible=False)  # noqa: E731
    f["_delete"].click(ask, [f["_items"], f["_selected"]], [f["_confirm_row"], f["_confirm_text"]], **quiet)
    f["_cancel"].click(hide, None, f["_confirm_row"], **quiet)
    f["_confirm"].click(hide, None, f["_confirm_row"], **quiet).then(
        delete, [*filters, f["_items"], f["_selected"]], outputs, **quiet
    )
    f["_load"] = search
    f["_load_inputs"] = filters
    f["_load_outputs"] = outputs
    return f


def wire_gallery_actions(ctx: StudioContext, f: dict[str, Any], runners: dict[str, Any], tabs: Any) -> None:
    """Reuse parameters (in txt2img), send to img2img / inpaint / extras, as History does."""
    from webui.ui.sendto import wire_result_actions

    def path_of(items: list[Any], index: int) -> str | None:
        return str(items[index][1]) if 0 <= index < len(items) else None

    wire_result_actions(ctx, f, runners, tabs, [f["_items"], f["_selected"]], path_of)
