"""The Settings tab: the options of /sdapi/v1/options (webui.core.settings.SPECS), grouped; saved
atomically through the same settings holder the API uses (all changes validated first, then one write).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.context import StudioContext

GROUPS: dict[str, tuple[str, ...]] = {
    "Saving images": (
        "samples_save", "samples_format", "save_images_add_number", "grid_save", "grid_format",
        "jpeg_quality", "enable_pnginfo",
    ),
    "Output folders": (
        "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_grids",
        "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save",
    ),
    "Live previews": ("live_previews_enable", "show_progress_every_n_steps"),
    "Stable Diffusion (defaults)": (
        "sd_model_checkpoint", "sd_vae", "sd_vae_overrides_per_model_preferences", "CLIP_stop_at_last_layers",
        "comma_padding_backtrack", "img2img_fix_steps", "initial_noise_multiplier",
    ),
    "Sampler parameters": (
        "eta_noise_seed_delta", "randn_source", "eta_ddim", "eta_ancestral", "s_churn", "s_tmin", "s_tmax",
        "s_noise",
    ),
}  # fmt: skip


def _control(spec: Any, value: Any) -> Any:
    label = f"{spec.label} ({spec.key})"
    if spec.kind is bool:
        return gr.Checkbox(bool(value), label=label)
    if spec.kind in (int, float):
        return gr.Number(value, label=label, precision=0 if spec.kind is int else None)
    return gr.Textbox("" if value is None else str(value), label=label, lines=1)


def build_settings(ctx: StudioContext) -> dict[str, Any]:
    from webui.core.settings import SPECS

    current = ctx.services.settings.as_dict()
    controls: dict[str, Any] = {}
    with gr.Row():
        save = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", min_width=160)
        reload = gr.Button("Reload", elem_id="settings_reload", min_width=100)
    result = gr.Textbox(label="Result", interactive=False, elem_id="settings_result", lines=1)
    for group, keys in GROUPS.items():
        with gr.Accordion(group, open=group == "Saving images"):
            for key in keys:
                spec = SPECS.get(key)
                if spec is not None:
                    controls[key] = _control(spec, current.get(key))
    keys = list(controls)

    def apply(*values: Any) -> str:
        from webui.core.types import RequestError

        now = ctx.services.settings.as_dict()
        changes: dict[str, Any] = {}
        for key, value in zip(keys, values, strict=True):
            spec = SPECS[key]
            if spec.kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            if spec.kind is str and spec.nullable and value == "":
                value = None
            if value != now.get(key):
                changes[key] = value
        if not changes:
            return "Nothing changed."

        def check_checkpoint(name: str) -> None:
            ctx.services.manager.resolve(name)

        def check_vae(name: str) -> None:
            ctx.services.manager.resolve_vae(name)

        try:
            ctx.services.settings.update(changes, check_checkpoint, check_vae)
        except (RequestError, LookupError, ValueError) as e:
            return f"Not saved: {e}"
        return f"Saved {len(changes)} setting{'s' if len(changes) != 1 else ''}: {', '.join(changes)}"

    def load() -> list[Any]:
        now = ctx.services.settings.as_dict()
        return [now.get(k) if now.get(k) is not None else "" for k in keys]

    save.click(apply, [controls[k] for k in keys], result, concurrency_limit=None, api_visibility="private")
    reload.click(load, None, [controls[k] for k in keys], concurrency_limit=None, api_visibility="private")
    return {"_controls": controls, "_result": result, "_apply": save}
