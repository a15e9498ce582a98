"""The hires pass's checkpoint picker and the Refiner accordion (A1111 1.6's), for the generation tabs.

"Hires checkpoint" sits in the hires accordion ("Use same checkpoint" or a listed checkpoint); the
Refiner accordion has the refiner checkpoint ("None": no refiner) and "Switch at", the fraction of the
steps after which the refiner samples. The engine checks the family when the job is submitted; the lists
follow the top bar's refresh button and are read again on page load.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.context import StudioContext
from webui.ui.topbar import checkpoint_titles

SAME_CHECKPOINT = "Use same checkpoint"  # as webui.core.types reads it (the UI does not import core)
NO_REFINER = "None"
SWITCH_AT = 0.8  # A1111's UI default


def hires_checkpoint(ctx: StudioContext, tab: str) -> dict[str, Any]:
    """The hires pass's checkpoint picker (in the hires accordion)."""
    return {
        "hr_checkpoint_name": gr.Dropdown(
            [SAME_CHECKPOINT, *checkpoint_titles(ctx)],
            value=SAME_CHECKPOINT,
            label="Hires checkpoint",
            min_width=160,
            elem_id=f"{tab}_hr_checkpoint",
        )  # fmt: skip
    }


def refiner_controls(ctx: StudioContext, tab: str) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab}_refiner"), gr.Row():
        f["refiner_checkpoint"] = gr.Dropdown(
            [NO_REFINER, *checkpoint_titles(ctx)], value=NO_REFINER, label="Refiner checkpoint",
            min_width=160, elem_id=f"{tab}_refiner_checkpoint",
            info="same architecture as the checkpoint; it takes over the sampling from 'Switch at'",
        )  # fmt: skip
        f["refiner_switch_at"] = gr.Slider(
            0.01, 1, value=SWITCH_AT, step=0.01, label="Switch at", min_width=160,
            elem_id=f"{tab}_refiner_switch_at",
        )  # fmt: skip
    return f


def wire_lists(ctx: StudioContext, topbar: dict[str, Any], f: dict[str, Any]) -> None:
    """Keep this tab's checkpoint pickers listing the checkpoints there are (refresh, page load)."""
    pickers = [(n, first) for n, first in (("hr_checkpoint_name", SAME_CHECKPOINT),
               ("refiner_checkpoint", NO_REFINER)) if n in f]  # fmt: skip
    if not pickers:
        return
    outputs = [f[n] for n, _ in pickers]

    def lists(*_: Any) -> tuple[Any, ...]:
        titles = checkpoint_titles(ctx)
        return tuple(gr.update(choices=[first, *titles]) for _, first in pickers)

    topbar["_refresh"].click(lists, None, outputs, queue=False, api_visibility="private")
    ctx.page_load.add(lambda request: lists(), outputs)
