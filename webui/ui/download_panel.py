"""The Download panel (Models tab): a model file from a URL, or one of the starter models, as a queued
download job (webui.core.downloads), with a progress bar (bytes, speed, time left) and Cancel.

Nothing is fetched until Download is clicked: picking a starter only fills in its URL. The kind and
folder are read from the file itself unless chosen; the sha256 the source publishes is checked (or the
one typed in). With logins only admins may download or change the tokens. The tokens are write-only:
the page shows whether one is stored, never the token.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.core.downloads.fetch import human_bytes
from webui.core.downloads.request import KINDS, DownloadRequest
from webui.core.downloads.starters import STARTERS
from webui.core.types import RequestError
from webui.ui.context import StudioContext, refusal, user_of

DETECT = "Detect from the file"
POLL_SECONDS = 0.25
LABELS = {"url": "URL", "sha256": "SHA-256", "kind": "Kind", "filename": "File name"}


def starters_markdown() -> str:
    rows = [
        f"| {html.escape(s.name)} | {human_bytes(s.size_bytes)} | "
        f"[{html.escape(s.license)}]({s.license_url}) | {html.escape(s.note)} |"
        for s in STARTERS
    ]
    return "| Starter model | Size | License | Note |\n|---|---|---|---|\n" + "\n".join(rows)


def _error(message: str) -> str:
    return f"<p class='sf-download-error'>{html.escape(message)}</p>"


def progress_html(info: Any) -> str:
    """The job's state as a progress bar with bytes, speed and time left (or its outcome)."""
    state = info.state.value
    p = info.progress
    if state == "queued":
        return "<p class='sf-download-running'>Waiting for the download worker...</p>"
    if state == "running":
        share = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        total = f" of {human_bytes(p.bytes_total)}" if p.bytes_total else ""
        speed = f", {human_bytes(p.speed)}/s" if p.speed else ""
        eta = f", about {int(p.eta)} s left" if p.eta else ""
        return (
            f"<div class='sf-download-running'><progress max='1' value='{share:.4f}' style='width:100%'>"
            f"</progress><p>{human_bytes(p.bytes_done)}{total}{speed}{eta}</p></div>"
        )
    if state == "done" and info.output:
        out = info.output
        warn = "".join(f"<p class='sf-download-warning'>⚠ {html.escape(w)}</p>" for w in info.warnings)
        verified = "sha256 verified" if out.get("verified") else "not verified"
        return (
            f"<p class='sf-download-done'>Saved <b>{html.escape(str(out['path']))}</b> "
            f"({html.escape(KINDS.get(str(out['kind']), str(out['kind'])))}, "
            f"{human_bytes(int(out['bytes']))}, {verified}): "
            f"<code>{html.escape(str(out['title']))}</code></p>{warn}"
        )
    if state == "cancelled":
        return _error("Cancelled: nothing was kept.")
    field = LABELS.get(info.error_field or "", info.error_field or "")
    message = str(info.error or "failed").split(": ", 1)[-1] if field else str(info.error or "failed")
    return _error(f"{field}: {message}" if field else f"Download failed: {message}")


def tokens_text(ctx: StudioContext) -> str:
    s = ctx.services.settings
    hf = "stored" if s.get("hf_token") else "none"
    cv = "stored" if s.get("civitai_api_key") else "none"
    return f"Hugging Face token: {hf}. Civitai API key: {cv}."


def build_downloads(ctx: StudioContext) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Accordion("Download a model", open=False, elem_id="downloads"):
        gr.Markdown(starters_markdown(), elem_id="download_starters")
        with gr.Row():
            f["starter"] = gr.Dropdown(
                [s.name for s in STARTERS], value=None, label="Starter model", elem_id="download_starter"
            )
            f["_use"] = gr.Button("Use its URL", elem_id="download_use", scale=0, min_width=120)
        f["url"] = gr.Textbox(
            "", label="URL", elem_id="download_url",
            placeholder="https://huggingface.co/.../resolve/main/x.safetensors, or a Civitai model link",
        )  # fmt: skip
        with gr.Row():
            f["kind"] = gr.Dropdown(
                [DETECT, *KINDS.values()], value=DETECT, label="Kind", elem_id="download_kind"
            )
            f["filename"] = gr.Textbox("", label="File name (optional)", elem_id="download_filename")
            f["sha256"] = gr.Textbox("", label="SHA-256 (optional)", elem_id="download_sha256")
        with gr.Row():
            f["_download"] = gr.Button("Download", variant="primary", elem_id="download_button")
            f["_cancel"] = gr.Button("Cancel download", elem_id="download_cancel")
        f["_status"] = gr.HTML("", elem_id="download_status")
        f["_job"] = gr.State(None)
        with gr.Accordion("Tokens (kept on the server, never shown)", open=False, elem_id="download_tokens"):
            f["_tokens"] = gr.Markdown("", elem_id="download_tokens_state")
            with gr.Row():
                f["hf"] = gr.Textbox("", label="Hugging Face token", type="password", elem_id="download_hf")
                f["civitai"] = gr.Textbox(
                    "", label="Civitai API key", type="password", elem_id="download_civitai"
                )
            f["_save_tokens"] = gr.Button("Save tokens", elem_id="download_save_tokens")

    kinds_by_label = {label: key for key, label in KINDS.items()}

    def use(name: str | None) -> Any:
        found = next((s for s in STARTERS if s.name == name), None)
        return gr.update(value=found.url) if found else gr.skip()

    def start(url: str, kind: str, filename: str, sha: str, request: gr.Request) -> Iterator[tuple[Any, Any]]:
        why = refusal(ctx.services, request, "Downloading models")
        if why:
            yield _error(why), None
            return
        download = DownloadRequest(
            url=(url or "").strip(),
            sha256=(sha or "").strip(),
            kind=kinds_by_label.get(kind, ""),
            filename=(filename or "").strip(),
        )
        queue = ctx.services.queue
        try:
            info = queue.submit(download, user_of(request))
        except RequestError as e:
            yield _error(f"{LABELS.get(e.field, e.field)}: {e.message}"), None
            return
        except Exception as e:  # the queue is full or closed: say so
            yield _error(str(e)), None
            return
        yield progress_html(info), info.id
        while not info.state.finished:
            time.sleep(POLL_SECONDS)
            info = queue.get(info.id)
            yield progress_html(info), info.id

    def cancel(job_id: str | None, request: gr.Request) -> Any:
        why = refusal(ctx.services, request, "Cancelling a download")
        if why:
            return _error(why)
        if not job_id:
            return gr.skip()
        ctx.services.queue.cancel(job_id, user_of(request), admin=True)
        return "<p class='sf-download-running'>Cancelling...</p>"

    def save_tokens(hf: str, civitai: str, request: gr.Request) -> tuple[Any, Any, Any]:
        why = refusal(ctx.services, request, "Changing the download tokens")
        if why:
            return f"Not saved: {why}", gr.update(value=""), gr.update(value="")
        changes = {
            k: v.strip() for k, v in (("hf_token", hf), ("civitai_api_key", civitai)) if v and v.strip()
        }
        try:
            if changes:
                ctx.services.settings.update(changes)
        except RequestError as e:
            return f"Not saved: {e}", gr.update(value=""), gr.update(value="")
        return tokens_text(ctx), gr.update(value=""), gr.update(value="")

    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private")
    ctx.page_load.add(lambda _request: (tokens_text(ctx),), [f["_tokens"]])
    f["_use"].click(use, f["starter"], f["url"], **quiet)
    f["_download"].click(
        start, [f["url"], f["kind"], f["filename"], f["sha256"]], [f["_status"], f["_job"]], **quiet
    )
    f["_cancel"].click(cancel, f["_job"], f["_status"], **quiet)
    f["_save_tokens"].click(
        save_tokens, [f["hf"], f["civitai"]], [f["_tokens"], f["hf"], f["civitai"]], **quiet
    )
    return f
