"""Controls the generation tabs share: prompts with token counters, sampler, size, CFG, seeds, batch.

Each builder returns `{request field name: component}` so handlers read and fill fields by name (the
same names as webui.core.types requests, and as the PNG Info readers produce).
"""

from __future__ import annotations

import html
import math
from typing import Any

import gradio as gr

MAX_UI_SIZE = 2048
MIN_UI_SIZE = 64
RANDOM = "Random"
REUSE = "\u267b\ufe0f"  # recycle
SWAP = "\u21c5"
DETECT = "\U0001f4d0"  # triangular ruler
# what each icon button does, for screen readers and as a tooltip (the page script sets aria-label/title)
ICON_LABELS = {
    "\u21bb": "Refresh the list from disk",
    REUSE: "Reuse the seed of the selected image",
    SWAP: "Swap width and height",
    DETECT: "Use the size of the uploaded image",
}


def token_counter_html(text: str) -> str:
    return f"<span class='sf-tokens'>{html.escape(text)}</span>"


def prompt_area(ctx: Any, tab: str, steps: gr.Slider | None = None) -> dict[str, Any]:
    """Prompt and negative prompt, each with its live token counter; Generate, Interrupt, Skip, styles."""
    f: dict[str, Any] = {}
    with gr.Row(elem_classes="sf-prompt-row"):
        with gr.Column(scale=6, min_width=200):
            f["prompt"] = gr.Textbox(
                label="Prompt", lines=3, max_lines=12, elem_id=f"{tab}_prompt",
                placeholder="Prompt (Ctrl+Enter to generate)",
            )  # fmt: skip
            f["_prompt_tokens"] = gr.HTML(
                token_counter_html("0/75"), elem_id=f"{tab}_prompt_tokens", padding=False
            )
            f["negative_prompt"] = gr.Textbox(
                label="Negative prompt", lines=2, max_lines=8, elem_id=f"{tab}_neg_prompt"
            )
            f["_negative_tokens"] = gr.HTML(
                token_counter_html("0/75"), elem_id=f"{tab}_neg_tokens", padding=False
            )
        with gr.Column(scale=1, min_width=200, elem_classes="sf-actions"):
            f["_generate"] = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate", size="lg")
            with gr.Row():
                f["_interrupt"] = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", size="sm", min_width=80)
                f["_skip"] = gr.Button("Skip", elem_id=f"{tab}_skip", size="sm", min_width=80)
            with gr.Row():
                f["styles"] = gr.Dropdown(  # choices: read when the page opens (styles_editor)
                    [],
                    value=[],
                    multiselect=True,
                    label="Styles",
                    elem_id=f"{tab}_styles",
                    scale=4,
                    min_width=120,
                )
                f["_styles_refresh"] = gr.Button(
                    "\u21bb", size="sm", min_width=40, scale=1, elem_id=f"{tab}_styles_refresh"
                )
    return f


def _styles(ctx: Any) -> list[Any]:
    try:
        return list(ctx.services.engine.styles.list())
    except Exception:  # a damaged styles.csv must not stop the studio; the problem shows in the list
        return []


def sampler_names(ctx: Any) -> list[str]:
    """Every sampler name a request may use: the built-in ones, then the extensions'."""
    return ctx.services.engine.samplers.names()  # type: ignore[no-any-return]


def sampler_controls(ctx: Any, tab: str) -> dict[str, Any]:
    from webui.core.sampling.samplers import list_schedulers

    f: dict[str, Any] = {}
    with gr.Row():
        f["sampler_name"] = gr.Dropdown(
            sampler_names(ctx),
            value="DPM++ 2M",
            label="Sampling method",
            elem_id=f"{tab}_sampler",
            min_width=160,
        )
        f["scheduler"] = gr.Dropdown(
            [s["label"] for s in list_schedulers()], value="Automatic", label="Schedule type",
            elem_id=f"{tab}_scheduler", min_width=160,
        )  # fmt: skip
    f["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{tab}_steps")
    return f


def size_controls(tab: str, detect: bool = False) -> dict[str, Any]:
    """Width and height with ⇅ (swap); with `detect`, also 📐 (the picture's size: img2img_size)."""
    f: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        with gr.Column(scale=4, min_width=200):
            f["width"] = gr.Slider(
                MIN_UI_SIZE, MAX_UI_SIZE, value=512, step=8, label="Width", elem_id=f"{tab}_width"
            )
            f["height"] = gr.Slider(
                MIN_UI_SIZE, MAX_UI_SIZE, value=512, step=8, label="Height", elem_id=f"{tab}_height"
            )
        with gr.Column(scale=0, min_width=40):
            f["_swap"] = gr.Button(SWAP, size="sm", min_width=40, elem_id=f"{tab}_swap")
            if detect:
                f["_detect_size"] = gr.Button(DETECT, size="sm", min_width=40, elem_id=f"{tab}_detect_size")
    f["_swap"].click(
        lambda w, h: (h, w), [f["width"], f["height"]], [f["width"], f["height"]], concurrency_limit=None
    )
    return f


def batch_and_cfg(tab: str) -> dict[str, Any]:
    f: dict[str, Any] = {}
    with gr.Row():
        f["n_iter"] = gr.Slider(
            1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab}_batch_count", min_width=160
        )
        f["batch_size"] = gr.Slider(
            1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab}_batch_size", min_width=160
        )
    f["cfg_scale"] = gr.Slider(1, 30, value=7, step=0.5, label="CFG scale", elem_id=f"{tab}_cfg")
    return f


def face_controls(tab: str) -> dict[str, Any]:
    """ "Restore faces" (A1111 moved it into Settings in 1.6; here it stays where people look for it).
    The restorer and CodeFormer's weight are the Settings tab's (Face restoration)."""
    return {
        "restore_faces": gr.Checkbox(
            False,
            label="Restore faces",
            info="after each image, with the face restoration model chosen in Settings",
            elem_id=f"{tab}_restore_faces",
        )
    }


def seed_controls(tab: str) -> dict[str, Any]:
    """Seed, random and reuse (♻️: the selected image's seed, wired by wire_gallery_select), variation."""
    f: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        f["seed"] = gr.Number(
            -1, precision=0, label="Seed (-1: random)", elem_id=f"{tab}_seed", scale=4, min_width=140
        )
        random_seed = gr.Button(RANDOM, size="sm", min_width=70, scale=0, elem_id=f"{tab}_random_seed")
        f["_reuse_seed"] = gr.Button(REUSE, size="sm", min_width=40, scale=0, elem_id=f"{tab}_reuse_seed")
    with gr.Accordion("Variation seed", open=False, elem_id=f"{tab}_variation"):
        with gr.Row(equal_height=True):
            f["subseed"] = gr.Number(
                -1, precision=0, label="Variation seed", elem_id=f"{tab}_subseed", min_width=140
            )
            f["subseed_strength"] = gr.Slider(
                0,
                1,
                value=0,
                step=0.01,
                label="Variation strength",
                elem_id=f"{tab}_subseed_strength",
                min_width=160,
            )
        with gr.Row():
            f["seed_resize_from_w"] = gr.Slider(
                0, MAX_UI_SIZE, value=0, step=8, label="Resize seed from width", min_width=160
            )
            f["seed_resize_from_h"] = gr.Slider(
                0, MAX_UI_SIZE, value=0, step=8, label="Resize seed from height", min_width=160
            )
    random_seed.click(lambda: -1, None, f["seed"], concurrency_limit=None, show_progress="hidden")
    return f


def results_column(tab: str) -> dict[str, Any]:
    """Status (progress bar, queue position, ETA), live preview, gallery, infotext and send-to buttons.
    The live preview shows in the gallery's place while a job runs (runner.frame_outputs), drawn at the
    output's size (polling.decode_preview) and no larger than the column and the screen (CSS)."""
    f: dict[str, Any] = {}
    f["_status"] = gr.HTML("", elem_id=f"{tab}_status", padding=False)
    f["_preview"] = gr.Image(
        label="Live preview",
        interactive=False,
        visible=False,
        elem_id=f"{tab}_preview",
        elem_classes="sf-preview",
        type="pil",
        format="jpeg",
        buttons=[],
    )
    f["_gallery"] = gr.Gallery(
        label="Output", elem_id=f"{tab}_gallery", columns=3, height="auto", object_fit="contain",
        interactive=False, type="filepath", format="png",
    )  # fmt: skip
    f["_warnings"] = warnings_box(tab)
    f["_selected"] = gr.State(0)  # the gallery image "send to" and ♻️ act on
    with gr.Row():
        f["_to_img2img"] = gr.Button("Send to img2img", size="sm", elem_id=f"{tab}_to_img2img", min_width=100)
        f["_to_inpaint"] = gr.Button("Send to inpaint", size="sm", elem_id=f"{tab}_to_inpaint", min_width=100)
        f["_to_extras"] = gr.Button("Send to extras", size="sm", elem_id=f"{tab}_to_extras", min_width=100)
        f["_reuse"] = gr.Button("Reuse parameters", size="sm", elem_id=f"{tab}_reuse", min_width=100)
    f["_info"] = gr.Textbox(
        label="Generation info",
        lines=4,
        max_lines=12,
        interactive=False,
        elem_id=f"{tab}_info",
        buttons=["copy"],
    )
    return f


def snap_to_step(value: float, lo: float, step: float, hi: float | None = None) -> int | float:
    """`value` on the grid lo, lo + step, ... (nearest point), within lo..hi."""
    snapped = lo + math.floor((value - lo) / step + 0.5) * step  # halves go up, as the slider shows them
    if hi is not None:
        snapped = min(snapped, lo + ((hi - lo) // step) * step)
    snapped = max(lo, snapped)
    return int(snapped) if float(snapped).is_integer() else snapped


def warnings_box(tab: str) -> Any:
    """Where a finished job's warnings show (a missing LoRA, a model passed over): under the gallery."""
    return gr.HTML("", visible=False, elem_id=f"{tab}_warnings", padding=False)


def clamp_for(component: Any, value: Any) -> Any:
    """A value a slider or number accepts (min/max/step respected)."""
    lo, hi = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None:
            value = max(lo, value)
        if hi is not None:
            value = min(hi, value)
    return value


# event options of the small UI-only handlers: unqueued, no progress overlay, not in the API
QUIET: dict[str, Any] = dict(
    concurrency_limit=None, show_progress="hidden", api_visibility="private", queue=False
)


def selected_index(items: list[Any] | None, index: Any) -> int | None:
    """The selected gallery image's place in `items` (the first when the selection is stale); None: empty."""
    if not items:
        return None
    return index if isinstance(index, int) and 0 <= index < len(items) else 0


def wire_gallery_select(f: dict[str, Any]) -> None:
    """Clicking a gallery image shows its infotext and remembers its index in `_selected` (for "send to"
    and ♻️); each new gallery of results selects its first image again (runner.frame_outputs)."""

    def select(infotexts: list[str], evt: gr.SelectData) -> tuple[str, int]:
        index = evt.index if isinstance(evt.index, int) else 0
        return (infotexts[index] if 0 <= index < len(infotexts) else ""), index

    f["_gallery"].select(select, f["_infotexts"], [f["_info"], f["_selected"]], **QUIET)
    if "_reuse_seed" in f:

        def reuse_seed(seeds: list[int] | None, index: int) -> Any:
            at = selected_index(seeds, index)
            return gr.skip() if at is None or seeds is None or seeds[at] < 0 else seeds[at]

        f["_reuse_seed"].click(reuse_seed, [f["_seeds"], f["_selected"]], f["seed"], **QUIET)


SNAPPED_STEP = 8  # sliders with this step (sizes) snap a typed value to it at once


def wire_size_snapping(f: dict[str, Any]) -> None:
    """A size typed into a slider's box (Width 100) becomes the multiple of 8 the slider shows (104) as
    soon as it is entered, instead of failing at Generate."""
    for component in f.values():
        if not isinstance(component, gr.Slider) or component.step != SNAPPED_STEP:
            continue

        def snap(value: Any, c: gr.Slider = component) -> Any:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                return gr.skip()
            snapped = snap_to_step(value, c.minimum, c.step, c.maximum)
            return gr.skip() if snapped == value else snapped

        component.change(snap, component, component, **QUIET)


def wire_common(ctx: Any, f: dict[str, Any]) -> None:
    """Token counters, styles refresh and gallery selection for a generation tab."""
    quiet = QUIET

    def count(text: str, steps: float) -> str:
        return token_counter_html(str(ctx.counter.count(text or "", int(steps or 1))))

    for box, out in (("prompt", "_prompt_tokens"), ("negative_prompt", "_negative_tokens")):
        f[box].change(count, [f[box], f["steps"]], f[out], trigger_mode="always_last", **quiet)
    f["steps"].release(count, [f["prompt"], f["steps"]], f["_prompt_tokens"], **quiet)

    def refresh_styles(current: list[str] | None) -> Any:
        names = [s.name for s in _styles(ctx)]
        return gr.update(choices=names, value=[c for c in (current or []) if c in names])

    f["_styles_refresh"].click(refresh_styles, f["styles"], f["styles"], **quiet)
    wire_gallery_select(f)
    wire_size_snapping(f)
