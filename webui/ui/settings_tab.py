"""The Settings tab: the options of /sdapi/v1/options (webui.core.settings.SPECS), grouped; saved
atomically through the server's one SettingsStore (the API's too; all changes validated, then one write).

The controls are filled when the page opens (and by Reload), and the page keeps what it loaded. Apply
writes only the settings the user changed since then: a setting saved meanwhile by another tab, browser
or the API is kept unless this page changed that same setting, and the page then shows the store again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr

from webui.ui.context import StudioContext, refusal

UI_GROUP = "Theme and UI defaults"  # also holds each user's theme and the ui-config.json defaults
GROUPS: dict[str, tuple[str, ...]] = {
    UI_GROUP: ("quicksettings_list",),
    "Saving images": (
        "samples_save", "samples_format", "save_images_add_number", "grid_save", "grid_format",
        "jpeg_quality", "enable_pnginfo", "save_images_before_face_restoration",
    ),
    "Output folders": (
        "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_grids",
        "outdir_txt2img_grids", "outdir_img2img_grids",
    ),
    "Live previews": ("live_previews_enable", "show_progress_every_n_steps", "show_progress_type"),
    "Stable Diffusion (defaults)": (
        "sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "initial_noise_multiplier",
    ),
    "Face restoration": ("face_restoration", "face_restoration_model", "code_former_weight"),
    "Sampler parameters": (
        "eta_noise_seed_delta", "randn_source", "eta_ddim", "s_churn", "s_tmin", "s_tmax",
        "s_noise",
    ),
    "Memory": ("image_memory_limit_mb",),
    "Downloads": ("download_hosts",),  # the tokens are set in the Models tab's Download section, never shown
}  # fmt: skip


def _control(spec: Any, **extra: Any) -> Any:
    label = f"{spec.label} ({spec.key})"
    if spec.kind is list:  # quicksettings_list: setting names
        from webui.core.settings import quick_setting_keys

        return gr.Dropdown(
            list(quick_setting_keys()), value=list(spec.default), multiselect=True, label=label, **extra
        )
    if spec.kind is bool:
        return gr.Checkbox(bool(spec.default), label=label, **extra)
    if spec.kind in (int, float):
        return gr.Number(spec.default, label=label, precision=0 if spec.kind is int else None, **extra)
    return gr.Textbox(shown(spec.default), label=label, lines=1, **extra)


def shown(value: Any) -> Any:
    """A stored value as its control shows it (None: an empty box)."""
    return "" if value is None else value


def from_control(spec: Any, value: Any) -> Any:
    """A control's value as the setting's type (what the store compares and saves)."""
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind is str and spec.nullable and value == "":
        return None
    return value


def edits(
    keys: Sequence[str],
    loaded: Mapping[str, Any],
    values: Sequence[Any],
    extension_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings the user changed on this page: control values that differ from what it loaded.
    `extension_fields` are the extensions' settings (key -> plugin Field): checked by their field,
    RequestError naming the key."""
    from webui.core.settings import SPECS
    from webui.ui.extension_sections import plain_value

    out: dict[str, Any] = {}
    for key, value in zip(keys, values, strict=True):
        f = (extension_fields or {}).get(key)
        value = f.coerce(plain_value(f, value), key) if f is not None else from_control(SPECS[key], value)
        if key not in loaded or value != loaded[key]:
            out[key] = value
    return out


def extension_value(f: Any, key: str, stored: Any) -> Any:
    """What an extension setting holds: the stored value if its field still takes it, else the default."""
    from webui.core.types import RequestError

    try:
        return f.default if stored is None else f.coerce(stored, key)
    except RequestError:
        return f.default


def _slug(group: str) -> str:
    return "settings_" + "".join(c if c.isalnum() else "_" for c in group.lower())


def _plural(n: int) -> str:
    return f"{n} setting{'s' if n != 1 else ''}"


def build_settings(ctx: StudioContext) -> dict[str, Any]:
    from webui.core.settings import SPECS

    controls: dict[str, Any] = {}
    with gr.Row():
        save = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", min_width=160)
        reload = gr.Button("Reload", elem_id="settings_reload", min_width=100)
    result = gr.Textbox(label="Result", interactive=False, elem_id="settings_result", lines=1)
    loaded_state = gr.State(None)  # {key: value} as this page loaded them
    for group, members in GROUPS.items():
        with gr.Accordion(group, open=group == "Saving images", elem_id=_slug(group)):
            if group == UI_GROUP:
                from webui.ui.ui_prefs import build_section

                build_section(ctx)
            for key in members:
                spec = SPECS.get(key)
                if spec is not None:
                    controls[key] = _control(spec)
    ext_fields = _extension_settings(ctx, controls)
    keys = list(controls)
    store = ctx.services.settings

    def current(now: Mapping[str, Any]) -> dict[str, Any]:
        """Each setting as it stands (an extension's unset one at its field's default)."""
        return {
            k: extension_value(ext_fields[k], k, now.get(k)) if k in ext_fields else now.get(k) for k in keys
        }

    def snapshot() -> list[Any]:
        loaded = current(store.as_dict())
        return [loaded, *(shown(loaded[k]) for k in keys)]

    def apply(request: gr.Request, loaded: dict[str, Any] | None, *values: Any) -> list[Any]:
        from webui.core.types import RequestError

        refused = refusal(ctx.services, request, "Changing server settings")
        if refused:
            return [f"Not saved: {refused}", *_skips()]
        if not isinstance(loaded, dict):
            return ["Not saved: the page has not finished loading the settings; press Reload.", *_skips()]
        try:
            changes = edits(keys, loaded, values, ext_fields)
        except RequestError as e:
            return [f"Not saved: {e}", *_skips()]
        now = store.as_dict()
        standing = current(now)
        elsewhere = [k for k in keys if k not in changes and standing[k] != loaded.get(k)]
        changes = {k: v for k, v in changes.items() if v != now.get(k)}
        if changes:
            try:
                store.update(changes, ctx.services.manager.resolve, ctx.services.manager.resolve_vae)
            except (RequestError, LookupError, ValueError) as e:
                return [f"Not saved: {e}", *_skips()]
            said = [f"Saved {_plural(len(changes))}: {', '.join(changes)}"]
        else:
            said = ["Nothing changed"]
        if elsewhere:
            said.append(f"kept as saved elsewhere meanwhile: {', '.join(elsewhere)}")
        return ["; ".join(said) + ".", *snapshot()]

    def _skips() -> list[Any]:
        return [gr.skip()] * (len(keys) + 1)

    fields = [controls[k] for k in keys]
    ctx.page_load.add(lambda _request: snapshot(), [loaded_state, *fields])
    save.click(
        apply, [loaded_state, *fields], [result, loaded_state, *fields], concurrency_limit=None,
        api_visibility="private",
    )  # fmt: skip
    reload.click(
        lambda: ["Reloaded.", *snapshot()], None, [result, loaded_state, *fields], concurrency_limit=None,
        api_visibility="private",
    )  # fmt: skip
    return {"_controls": controls, "_result": result, "_apply": save, "_loaded": loaded_state}


def _extension_settings(ctx: StudioContext, controls: dict[str, Any]) -> dict[str, Any]:
    """One accordion per extension SettingsSection (its controls added to `controls` under the stored
    keys, `<extension>.<field>`); returns key -> plugin Field."""
    from webui.ui.extension_sections import host_of, picture_upscaler_names, render_field

    host = host_of(ctx)
    fields: dict[str, Any] = {}
    if host is None:
        return fields
    upscalers = picture_upscaler_names(ctx)
    for extension, section in host.settings_sections():
        with gr.Accordion(f"{section.title} ({extension})", open=False, elem_classes="sf-ext-settings"):
            for f in section.fields:
                key = f"{extension}.{f.name}"
                slug = "".join(c if c.isalnum() else "_" for c in key).lower()
                controls[key] = render_field(f, f"setting_{slug}", upscalers)
                fields[key] = f
    return fields
