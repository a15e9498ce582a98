"""The Checkpoint Merger panel (Models tab): A1111's merger fields over webui.core.models.merge_runs.

Merge starts a background merge (one at a time, server-wide) and shows its progress until the file is
written; the new checkpoint is then in every checkpoint list (the top bar's ↻ re-reads it). A merge
writes into the shared model folder, so with logins only admins may start or cancel one.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.core.models.merge import METHODS, MergeError
from webui.core.models.merge_runs import MergeBusy, MergeSpec, MergeStatus
from webui.ui.context import StudioContext, refusal, user_of

NONE = "None"
POLL_SECONDS = 0.25


def _titles(ctx: StudioContext) -> list[str]:
    return [f.title for f in ctx.services.manager.checkpoints()]


def _vaes(ctx: StudioContext) -> list[str]:
    return [NONE, *(f.name for f in ctx.services.manager.vaes())]


def status_html(s: MergeStatus) -> str:
    name = html.escape(s.output)
    if s.state == "running":
        share = f"{s.written} of {s.total} tensors" if s.total else "starting"
        return f"<p class='sf-merge-running'>Merging into <b>{name}</b>: {share}</p>"
    if s.state == "done":
        return (
            f"<p class='sf-merge-done'>Saved <b>{name}</b> in the checkpoint folder ({s.total} tensors, "
            f"{s.merged} merged). Pick it in the checkpoint list (↻ re-reads it).</p>"
        )
    if s.state == "cancelled":
        return f"<p class='sf-merge-error'>Cancelled: {name} was not written.</p>"
    return f"<p class='sf-merge-error'>Merge failed: {html.escape(s.error)}</p>"


def _error(message: str) -> str:
    return f"<p class='sf-merge-error'>{html.escape(message)}</p>"


LABELS = {  # request field -> the label the user sees, for error messages
    "primary_model_name": "Primary model (A)",
    "secondary_model_name": "Secondary model (B)",
    "tertiary_model_name": "Tertiary model (C)",
    "interp_method": "Interpolation method",
    "custom_name": "Custom name",
    "bake_in_vae": "Bake in VAE",
    "discard_weights": "Discard weights with matching name",
    "checkpoint_format": "Checkpoint format",
}


def build_merger(ctx: StudioContext) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Accordion("Checkpoint merger", open=False, elem_id="merger"):
        with gr.Row():
            f["primary"] = gr.Dropdown([], label=LABELS["primary_model_name"], elem_id="merge_primary")
            f["secondary"] = gr.Dropdown([], label=LABELS["secondary_model_name"], elem_id="merge_secondary")
            f["tertiary"] = gr.Dropdown([], label=LABELS["tertiary_model_name"], elem_id="merge_tertiary")
            f["_refresh"] = gr.Button("↻", elem_id="merge_refresh", scale=0, min_width=40)
        f["method"] = gr.Radio(list(METHODS), value="Weighted sum", label="Interpolation method",
                               elem_id="merge_method")  # fmt: skip
        f["multiplier"] = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M)",
                                    elem_id="merge_multiplier")  # fmt: skip
        with gr.Row():
            f["name"] = gr.Textbox(
                "",
                label=LABELS["custom_name"],
                placeholder="optional; A1111's name otherwise",
                elem_id="merge_name",
            )
            f["vae"] = gr.Dropdown([NONE], value=NONE, label=LABELS["bake_in_vae"], elem_id="merge_vae")
        f["discard"] = gr.Textbox("", label=LABELS["discard_weights"], placeholder="a regular expression",
                                  elem_id="merge_discard")  # fmt: skip
        with gr.Row():
            f["half"] = gr.Checkbox(False, label="Save as float16", elem_id="merge_half")
            f["metadata"] = gr.Checkbox(True, label="Save metadata", elem_id="merge_metadata")
        with gr.Row():
            f["_merge"] = gr.Button("Merge", variant="primary", elem_id="merge_button")
            f["_cancel"] = gr.Button("Cancel merge", elem_id="merge_cancel")
        f["_status"] = gr.HTML("", elem_id="merge_status")
        f["_run"] = gr.State(None)

    lists = [f["primary"], f["secondary"], f["tertiary"], f["vae"]]

    def read_lists(*current: Any) -> tuple[Any, ...]:
        titles, vaes = _titles(ctx), _vaes(ctx)

        def keep(value: Any, choices: list[str], default: Any) -> Any:
            return gr.update(choices=choices, value=value if value in choices else default)

        a, b, c, v = (list(current) + [None] * 4)[:4]
        return (keep(a, titles, None), keep(b, titles, None), keep(c, titles, None), keep(v, vaes, NONE))

    def merge(a: Any, b: Any, c: Any, method: str, m: float, name: str, vae: Any, discard: str, half: bool,
              meta: bool, request: gr.Request) -> Iterator[tuple[Any, ...]]:  # fmt: skip
        why = refusal(ctx.services, request, "Merging checkpoints")
        if why:
            yield _error(why), None, *([gr.skip()] * 4)
            return
        spec = MergeSpec(
            primary_model_name=a or "", secondary_model_name=b or "", tertiary_model_name=c or "",
            interp_method=method, multiplier=float(m), save_as_half=bool(half), custom_name=name or "",
            bake_in_vae=vae or NONE, discard_weights=discard or "", save_metadata=bool(meta),
        )  # fmt: skip
        runs = ctx.services.merges
        try:
            status = runs.start(spec, user_of(request))
        except MergeError as e:
            label = LABELS.get(e.field, e.field)
            yield _error(f"{label}: {str(e).split(': ', 1)[-1]}"), None, *([gr.skip()] * 4)
            return
        except MergeBusy as e:
            yield _error(str(e)), None, *([gr.skip()] * 4)
            return
        yield status_html(status), status.id, *([gr.skip()] * 4)
        while status.state == "running":
            time.sleep(POLL_SECONDS)
            status = runs.status(status.id) or status
            yield status_html(status), status.id, *([gr.skip()] * 4)
        yield status_html(status), status.id, *read_lists(a, b, c, vae)

    def cancel(run_id: str | None, request: gr.Request) -> Any:
        why = refusal(ctx.services, request, "Cancelling a merge")
        if why:
            return _error(why)
        if not run_id or not ctx.services.merges.cancel(run_id):
            return gr.skip()
        return "<p class='sf-merge-running'>Cancelling...</p>"

    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private")
    ctx.page_load.add(lambda _request: read_lists(), lists)
    f["_refresh"].click(read_lists, lists, lists, **quiet)
    inputs = [f["primary"], f["secondary"], f["tertiary"], f["method"], f["multiplier"], f["name"], f["vae"],
              f["discard"], f["half"], f["metadata"]]  # fmt: skip
    f["_merge"].click(merge, inputs, [f["_status"], f["_run"], *lists], **quiet)
    f["_cancel"].click(cancel, f["_run"], f["_status"], **quiet)
    return f
