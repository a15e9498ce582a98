"""The Inpaint tab's "Soft inpainting" accordion (A1111 1.8's labels, help and ranges) and the
differential diffusion switch. Controls are named by request field, so the tab's runner, PNG Info's
"Send to inpaint" and the last-parameters restore handle them like every other field."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core import soft_inpaint_fields as soft

_INTRO = (
    "Soft inpainting allows you to **seamlessly blend original content with inpainted content** according "
    "to the mask opacity. **High _Mask blur_** values are recommended!"
)
_COMPOSITE = (
    "Masks are generated based on how much a part of the image changed after denoising. If the difference "
    "is low, the original pixels are used instead of the pixels returned by the inpainting process "
    "(in the mask's soft edge; a hard mask inpaints as usual)."
)
_DIFFERENTIAL = (
    "The mask as a per-pixel change map: a pixel at mask value m (blurred edges included) is denoised in "
    "the last m of the steps and follows the original before, so grey areas change a little and white "
    "ones fully. Paint or upload a grey-level mask; cannot be combined with soft inpainting."
)


def build(f: dict[str, Any], tab: str) -> None:
    """Add the controls to the tab's fields `f` (request field name -> component)."""
    with gr.Accordion(soft.ENABLED_LABEL, open=False, elem_id=f"{tab}_soft_inpainting_accordion"):
        f[soft.ENABLED_FIELD] = gr.Checkbox(
            False, label=soft.ENABLED_LABEL, elem_id=f"{tab}_soft_inpainting_enabled"
        )
        gr.Markdown(_INTRO)
        for p in soft.PARAMS[:3]:
            f[p.field] = _slider(p, tab)
        gr.Markdown("### Pixel Composite Settings\n" + _COMPOSITE)
        for p in soft.PARAMS[3:]:
            f[p.field] = _slider(p, tab)
    with gr.Accordion(soft.DIFFERENTIAL_LABEL, open=False, elem_id=f"{tab}_differential_accordion"):
        f[soft.DIFFERENTIAL_FIELD] = gr.Checkbox(
            False, label=soft.DIFFERENTIAL_LABEL, elem_id=f"{tab}_differential_diffusion"
        )
        gr.Markdown(_DIFFERENTIAL)


def _slider(p: soft.Param, tab: str) -> Any:
    return gr.Slider(
        p.minimum, p.maximum, value=p.default, step=p.step, label=p.label, info=p.info,
        elem_id=f"{tab}_{p.field}",
    )  # fmt: skip
