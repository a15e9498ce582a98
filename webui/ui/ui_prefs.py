"""Settings → "Theme and UI defaults": each user's theme, and the UI defaults of ui-config.json.

- Theme (light, dark, follow the system) is the calling user's own choice, kept in ui-users.json
  (webui.core.user_prefs) and applied in the browser by js/theme.js: on page load from the server, and
  at once from the browser's last known choice so a reload does not flash the other theme.
- UI defaults: the generation tabs' labelled controls get A1111's ui-config.json keys
  (`txt2img/Sampling steps/value`, `.../minimum`, `.../maximum`, `.../step`, `.../visible`), read when
  the UI is built (webui.core.ui_defaults); keys that cannot be used are logged and listed here.
  "Set current values as defaults" writes the page's current values (admins only, with logins).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.ui_defaults import FILE_NAME, Control, UiDefaults, load, save_values
from webui.core.user_prefs import THEMES
from webui.ui.context import StudioContext, refusal, user_of

log = logging.getLogger("sfumato.ui")
THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
SET_THEME_JS = "(t) => (window.sfTheme ? window.sfTheme.set(t) : t)"
MAX_PROBLEMS_SHOWN = 50
LOCAL_USER = "local"  # ui-users.json's key for the single user of a server without logins


@dataclass
class UiDefaultsState:
    """The controls that take defaults ({`<tab>/<label>`: component}) and what the file gave."""

    path: Path
    components: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, Control] = field(default_factory=dict)
    found: UiDefaults = field(default_factory=UiDefaults)


def prefs_user(ctx: StudioContext, request: Any) -> str:
    """Whose choices these are: the signed-in user, or without logins the one local user (every
    browser of this machine's server shares the theme then, as it shares the settings)."""
    return user_of(request) if ctx.services.options.auth else LOCAL_USER


def ui_config_path(ctx: StudioContext) -> Path:
    return Path(ctx.services.config.settings_path).parent / FILE_NAME


def _walk(block: Any) -> Any:
    for child in getattr(block, "children", None) or []:
        yield child
        yield from _walk(child)


def _choices(component: Any) -> tuple[str, ...] | None:
    if getattr(component, "allow_custom_value", False):
        return None
    out = []
    for choice in getattr(component, "choices", None) or []:
        value = choice[1] if isinstance(choice, (tuple, list)) else choice
        if not isinstance(value, str):
            return None
        out.append(value)
    return tuple(out)


def describe(key: str, component: Any) -> Control | None:
    """The control's kind, value and range as plain data; None for a component that takes no defaults."""
    visible = getattr(component, "visible", True) is not False
    if isinstance(component, (gr.Slider, gr.Number)):
        kind = "slider" if isinstance(component, gr.Slider) else "number"
        return Control(
            key, kind, component.value, getattr(component, "minimum", None),
            getattr(component, "maximum", None), getattr(component, "step", None), visible,
        )  # fmt: skip
    if isinstance(component, gr.Checkbox):
        return Control(key, "checkbox", component.value, visible=visible)
    if isinstance(component, gr.Textbox):
        return Control(key, "text", component.value, visible=visible)
    if isinstance(component, gr.Dropdown):
        kind = "multichoice" if component.multiselect else "choice"
        return Control(key, kind, component.value, visible=visible, choices=_choices(component))
    if isinstance(component, gr.Radio):
        return Control(key, "choice", component.value, visible=visible, choices=_choices(component))
    return None


def collect(tabs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Control]]:
    """The labelled controls of each tab block ({tab name: gr.Tab}) by `<tab>/<label>`. When a label is
    used twice in a tab (a script's "Denoising strength" beside the tab's own), the key names the first
    one built: the tab's own control, as an A1111 user's file means it."""
    components: dict[str, Any] = {}
    controls: dict[str, Control] = {}
    for tab, block in tabs.items():
        for component in _walk(block):
            label = getattr(component, "label", None)
            if not isinstance(label, str) or not label or "/" in label:
                continue
            key = f"{tab}/{label}"
            control = describe(key, component)
            if control is None or key in controls:
                continue
            components[key], controls[key] = component, control
    return components, controls


def apply_defaults(ctx: StudioContext, tabs: Mapping[str, Any]) -> UiDefaultsState:
    """Read ui-config.json and set the tabs' controls from it (call while the Blocks is being built).
    Nothing here stops the start: a failure leaves the built defaults and is logged and listed."""
    path = ui_config_path(ctx)
    components, controls = collect(tabs)
    try:
        found = load(path, controls.values())
        for key, fields in found.fields.items():
            component = components[key]
            for name in ("minimum", "maximum", "step"):
                if name in fields:
                    setattr(component, name, fields[name])
            if "visible" in fields:
                component.visible = fields["visible"]
            if "value" in fields:
                component.value = fields["value"]
    except Exception as e:  # a bug here must not stop the server: the UI keeps its own defaults
        log.exception("%s: UI defaults not applied", path)
        found = UiDefaults(problems=(f"{path}: not applied ({type(e).__name__}: {e}); see the server log",))
    return UiDefaultsState(path, components, controls, found)


def problems_text(found: UiDefaults) -> str:
    if not found.problems:
        return "Every key of ui-config.json is in use (or there is no such file)."
    lines = list(found.problems[:MAX_PROBLEMS_SHOWN])
    more = len(found.problems) - len(lines)
    return "\n".join([*lines, *([f"... and {more} more (see the server log)"] if more > 0 else [])])


def build_section(ctx: StudioContext) -> dict[str, Any]:
    """The section's controls (inside Settings' "Theme and UI defaults" accordion) and their wiring."""
    f: dict[str, Any] = {}
    store = ctx.user_prefs
    f["theme"] = gr.Radio(
        [(THEME_LABELS[t], t) for t in THEMES], value="system", label="Theme (yours only)",
        elem_id="settings_theme",
    )  # fmt: skip
    state: UiDefaultsState | None = ctx.ui_defaults
    with gr.Row():
        f["_set_defaults"] = gr.Button(
            "Set current values as defaults", elem_id="settings_ui_defaults", min_width=200
        )
    f["_defaults_result"] = gr.Textbox(
        label="UI defaults", interactive=False, lines=1, elem_id="settings_ui_defaults_result"
    )
    f["_problems"] = gr.Textbox(
        problems_text(state.found) if state else "", label=f"{FILE_NAME}: keys not used", interactive=False,
        lines=2, max_lines=12, elem_id="settings_ui_config_problems",
    )  # fmt: skip

    def set_theme(theme: str, request: gr.Request) -> None:
        from webui.core.types import RequestError

        try:
            store.set_theme(prefs_user(ctx, request), theme)
        except (RequestError, OSError) as e:
            gr.Warning(html.escape(f"Theme not saved: {e}"))

    f["theme"].input(
        set_theme, f["theme"], None, js=SET_THEME_JS, concurrency_limit=None, show_progress="hidden",
        api_visibility="private",
    )  # fmt: skip
    ctx.page_load.add(lambda request: [store.theme(prefs_user(ctx, request))], [f["theme"]])
    ctx.page_load.add_js(SET_THEME_JS, [f["theme"]])
    if state is not None:
        keys = list(state.components)

        def set_defaults(request: gr.Request, *values: Any) -> str:
            refused = refusal(ctx.services, request, "Changing the UI defaults")
            if refused:
                return f"Not saved: {refused}"
            try:
                written, skipped = save_values(
                    state.path, [state.controls[k] for k in keys], dict(zip(keys, values, strict=True))
                )
            except OSError as e:
                return f"Not saved: {e}"
            said = f"Saved {written} default values to {FILE_NAME}; they apply when the server starts next."
            return said + (f" Not saved: {'; '.join(skipped)}" if skipped else "")

        f["_set_defaults"].click(
            set_defaults, [state.components[k] for k in keys], f["_defaults_result"], concurrency_limit=None,
            api_visibility="private",
        )  # fmt: skip
    return f
