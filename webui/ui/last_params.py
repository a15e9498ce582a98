"""A reload keeps the user's work: each generation tab opens with the prompt and settings of the user's
last job made in it (A1111's "read last generation parameters", done on page load), read from the job
store, so it holds across browsers of the same login and across server restarts.

Only the tab's own controls are filled: the top bar keeps its own per-user choices (topbar.load_prefs),
pictures and masks are not brought back, and a control that cannot take a stored value is left as it is.
A user with no job yet sees the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, user_of

LOOK_BACK = 50  # jobs of the user searched for each tab's last one


def restored_names(fields: Mapping[str, Any]) -> list[str]:
    """The request fields of a tab that a reload restores (not the top bar's, not extensions')."""
    from webui.ui.sendto import tab_field_names
    from webui.ui.topbar import TOPBAR_FIELDS

    return [n for n in tab_field_names(fields) if not n.startswith("_") and n not in TOPBAR_FIELDS]


def last_jobs(ctx: StudioContext, user: str, tabs: list[str]) -> dict[str, Any]:
    """{tab: the user's newest job shown in that tab} for the tabs that have one."""
    from webui.ui.studio import tab_of

    found: dict[str, Any] = {}
    for info in ctx.services.queue.list(owner=user, limit=LOOK_BACK):
        tab = tab_of(info)
        if tab in tabs and tab not in found:
            found[tab] = info
    return found


def _values(request: Mapping[str, Any]) -> dict[str, Any]:
    from webui.ui.txt2img_tab import SAME_SAMPLER, SAME_SCHEDULER

    values = {k: v for k, v in request.items() if v is not None}
    if request.get("hr_sampler_name") is None:
        values["hr_sampler_name"] = SAME_SAMPLER
    if request.get("hr_scheduler") is None:
        values["hr_scheduler"] = SAME_SCHEDULER
    return values


def wire_last_params(ctx: StudioContext, runners: Mapping[str, Any]) -> None:
    """Register the page-load reader that fills each generation tab from the user's last job there."""
    from webui.ui.sendto import ui_value

    tabs = {name: r for name, r in runners.items() if "prompt" in r.fields}
    names = {tab: restored_names(r.fields) for tab, r in tabs.items()}
    outputs = [tabs[tab].fields[n] for tab in tabs for n in names[tab]]

    def read(request: Any) -> list[Any]:
        jobs = last_jobs(ctx, user_of(request), list(tabs))
        out: list[Any] = []
        for tab, runner in tabs.items():
            info = jobs.get(tab)
            values = _values(info.request) if info is not None else {}
            for name in names[tab]:
                value = values.get(name)
                out.append(gr.skip() if value is None else ui_value(name, value, runner.fields[name]))
        return out

    ctx.page_load.add(read, outputs)
