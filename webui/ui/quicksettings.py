"""The quicksettings row: the settings named by `quicksettings_list` (A1111's setting) in the top bar.

Three names stand for the top bar's own per-user controls (`sd_model_checkpoint`: the checkpoint list and
its refresh button, `sd_vae`: the VAE, `CLIP_stop_at_last_layers`: clip skip); every other shown setting
has a control here that is hidden unless the list names it. Which ones show is read from the settings
on every page load, so a change of the list (Settings → "Theme and UI defaults", or the API) shows on
the next reload, no restart.

A setting changed here is saved like one in the Settings tab: validated, written atomically through the
server's one SettingsStore, admins only when logins are on (others see it read-only), and only when the
user changed it since the page loaded it: a value saved meanwhile elsewhere is never overwritten by an
untouched control.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, refusal

TOPBAR_KEYS = {"sd_model_checkpoint": "checkpoint", "sd_vae": "vae", "CLIP_stop_at_last_layers": "clip_skip"}


def shown_keys(ctx: StudioContext) -> tuple[str, ...]:
    """The settings the top row shows now (the list as stored)."""
    value = ctx.services.settings.get("quicksettings_list")
    return tuple(value) if isinstance(value, (list, tuple)) else ()


def build_quicksettings(ctx: StudioContext) -> dict[str, Any]:
    """The hidden-until-listed controls of the settings without a top-bar control (call inside the
    top bar's row): {setting key: component}."""
    from webui.core.settings import SPECS, quick_setting_keys
    from webui.ui.settings_tab import _control

    controls: dict[str, Any] = {}
    for key in quick_setting_keys():
        if key in TOPBAR_KEYS:
            continue
        controls[key] = _control(SPECS[key], visible=False, elem_id=f"qs_{key}", scale=2, min_width=160)
    return controls


def wire_quicksettings(ctx: StudioContext, controls: dict[str, Any], row: Any) -> None:
    from webui.ui.settings_tab import shown

    store = ctx.services.settings
    keys = list(controls)
    loaded = gr.State(None)  # {key: value} as this page loaded them

    def read(request: Any) -> list[Any]:
        listed = set(shown_keys(ctx))
        editable = refusal(ctx.services, request, "Changing server settings") is None
        values = {k: store.get(k) for k in keys}
        updates = [gr.update(value=shown(values[k]), visible=k in listed, interactive=editable) for k in keys]
        return [values, gr.update(visible=bool(listed & set(keys))), *updates]

    ctx.page_load.add(read, [loaded, row, *(controls[k] for k in keys)])

    def saver(key: str) -> Any:
        def save(had: dict[str, Any] | None, value: Any, request: gr.Request) -> tuple[Any, Any]:
            return save_setting(ctx, key, had, value, request)

        return save

    # queued (not concurrency-limited): a refusal's warning reaches the page only through the queue
    # always_last: a change made while the previous save is still on its way is saved (or refused) after
    # it, never dropped
    quiet: dict[str, Any] = dict(
        concurrency_limit=None, show_progress="hidden", api_visibility="private", trigger_mode="always_last"
    )
    for key in keys:
        control = controls[key]
        save = saver(key)
        if isinstance(control, (gr.Checkbox, gr.Dropdown)):
            control.input(save, [loaded, control], [loaded, control], **quiet)
        else:  # typed values: saved when committed (Enter) or left, by one listener
            gr.on([control.submit, control.blur], save, [loaded, control], [loaded, control], **quiet)


def save_setting(
    ctx: StudioContext, key: str, had: dict[str, Any] | None, value: Any, request: Any
) -> tuple[Any, Any]:
    """Save one quicksetting the user changed: (the page's loaded values after it, the control's
    update). A value equal to what the page loaded is not written (a stale page never overwrites a
    value saved elsewhere); a refusal or a bad value is said, and the control shows the stored value."""
    from webui.core.settings import SPECS
    from webui.core.types import RequestError
    from webui.ui.settings_tab import from_control, shown

    store = ctx.services.settings
    if not isinstance(had, dict):
        return gr.skip(), gr.skip()
    value = from_control(SPECS[key], value)
    if value == had.get(key):
        return gr.skip(), gr.skip()  # untouched (a blur): nothing to write
    refused = refusal(ctx.services, request, "Changing server settings")
    try:
        if refused:
            raise RequestError(key, refused)
        store.update({key: value}, ctx.services.manager.resolve, ctx.services.manager.resolve_vae)
    except (RequestError, LookupError, ValueError, OSError) as e:
        gr.Warning(html.escape(f"Not saved: {e}"))
        return gr.skip(), shown(store.get(key))
    return {**had, key: store.get(key)}, gr.skip()
