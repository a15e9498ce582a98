"""A1111's img2img outpainting scripts, mapped onto the engine's own outpainting (Img2ImgRequest's
`outpaint_*` fields): one job that extends the canvas, fills the new area and inpaints it, keeping the
original pixels exactly.

"Outpainting mk2" script_args: [info, pixels, mask_blur, direction, noise_q, color_variation]; the
new area starts as noise shaped like the picture's spectrum (`noise_q`, the fall-off exponent: lower
means more detail; `color_variation`: 0 grey noise, 1 colour noise), with masked content "original".
"Poor man's outpainting" script_args: [pixels, mask_blur, inpainting_fill, direction]; the new area
starts as the stretched border, with the masked content chosen (fill, original, latent noise, latent
nothing; A1111 sends its index).

Where the engine differs from A1111: the canvas is rounded up to a multiple of 8 (A1111: 64), and the
whole new area is inpainted in one pass rather than side by side or tile by tile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from webui.plugins.api import Field, GenerationRequest, Img2ImgRequest, RequestError, Runner

from .common import ScriptRun, checked

DIRECTIONS = ("left", "right", "up", "down")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
_ALL = ", ".join(DIRECTIONS)
_RENAMED = {  # request fields the scripts set -> the script field to name in an error
    "outpaint_pixels": "pixels",
    "outpaint_directions": "direction",
    "outpaint_falloff": "noise_q",
    "outpaint_color_variation": "color_variation",
    "mask_blur_x": "mask_blur",
    "mask_blur_y": "mask_blur",
}

MK2_FIELDS = (
    Field(
        "info", "text", "", label="Note",
        info="A1111 recommends: sampling steps 80-100, Euler a, denoising strength 0.8. "
        "(A1111 clients send its note here; the text is not used.)",
    ),
    Field("pixels", "slider", 128, label="Pixels to expand", minimum=8, maximum=256, step=8),
    Field("mask_blur", "slider", 8, label="Mask blur", minimum=0, maximum=64, step=1),
    Field("direction", "text", _ALL, label="Outpainting direction", info=f"any of {_ALL}"),
    Field("noise_q", "slider", 1.0, label="Fall-off exponent (lower=higher detail)", minimum=0, maximum=4,
          step=0.01),
    Field("color_variation", "slider", 0.05, label="Color variation", minimum=0, maximum=1, step=0.01),
)  # fmt: skip

POOR_FIELDS = (
    Field("pixels", "slider", 128, label="Pixels to expand", minimum=8, maximum=256, step=8),
    Field("mask_blur", "slider", 4, label="Mask blur", minimum=0, maximum=64, step=1),
    Field("inpainting_fill", "radio", "fill", label="Masked content", choices=MASKED_CONTENT),
    Field("direction", "text", _ALL, label="Outpainting direction", info=f"any of {_ALL}"),
)


def directions(value: Any) -> tuple[str, ...]:
    """A1111's checkbox group (a list) or our text field ("left, up") as a tuple of sides."""
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise RequestError("direction", f"must be a list of {_ALL}, got {value!r}")
    bad = [v for v in items if v.casefold() not in DIRECTIONS]
    if bad:
        raise RequestError("direction", f"{bad[0]!r} is not a direction; use {_ALL}")
    if not items:
        raise RequestError("direction", f"choose at least one of {_ALL}")
    return tuple(dict.fromkeys(v.casefold() for v in items))


def _run(runner: Runner, request: GenerationRequest, changes: dict[str, Any], name: str) -> ScriptRun:
    if not isinstance(request, Img2ImgRequest):
        raise RequestError("script_name", f"{name} runs on img2img (it extends an init image)")
    job = dataclasses.replace(request, **changes, mask_blur=None, inpaint_full_res=False)
    try:
        job.validate(getattr(runner, "samplers", None))
    except RequestError as e:
        raise RequestError(_RENAMED.get(e.field, e.field), e.message) from e
    result = runner(job)
    return ScriptRun(cells=(result,), interrupted=result.interrupted)


def run_mk2(runner: Runner, request: GenerationRequest, args: Mapping[str, Any]) -> ScriptRun:
    a = checked(MK2_FIELDS, args, free=("info", "direction"))
    blur = a["mask_blur"]
    changes = {
        "outpaint_pixels": int(a["pixels"]),
        "outpaint_directions": directions(a["direction"]),
        "outpaint_fill": "matched",
        "outpaint_noise": 0.0,
        "outpaint_falloff": float(a["noise_q"]),
        "outpaint_color_variation": float(a["color_variation"]),
        "mask_blur_x": int(blur),
        "mask_blur_y": int(blur),
        "inpainting_fill": 1,  # original: the shaped noise is the starting point
    }
    return _run(runner, request, changes, "Outpainting mk2")


def run_poor(runner: Runner, request: GenerationRequest, args: Mapping[str, Any]) -> ScriptRun:
    a = checked(POOR_FIELDS, args, free=("direction",))
    blur = a["mask_blur"]
    changes = {
        "outpaint_pixels": int(a["pixels"]),
        "outpaint_directions": directions(a["direction"]),
        "outpaint_fill": "edge",
        "outpaint_noise": 0.0,
        "mask_blur_x": int(blur),
        "mask_blur_y": int(blur),
        "inpainting_fill": MASKED_CONTENT.index(a["inpainting_fill"]),
    }
    return _run(runner, request, changes, "Poor man's outpainting")
