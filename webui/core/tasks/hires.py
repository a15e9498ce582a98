"""Hires fix: the upscale between the passes, the second pass's settings, and its infotext (A1111's rules).

The target size (A1111's calculate_target_resolution) is `webui.core.sizes.hires_target`, which request
validation uses too; `Txt2ImgRequest.hr_target` and `hr_sampler` give a request's.

Upscalers: the latent modes resize the first pass's latents with torch's interpolate; "Lanczos",
"Nearest" and "None" (= Lanczos, as A1111's resize falls back to it) decode, resize the picture and
encode it again. Model upscalers (ESRGAN...) come with extensions: the engine knows their names and
hands their upscale functions to the task; requests name them like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import torch
from PIL import Image

from webui.core.sizes import LATENT_DOWNSCALE
from webui.core.sizes import HiresTarget as HiresTarget  # re-exported: callers think "hires"
from webui.core.sizes import hires_target as hires_target
from webui.core.types import SAME_CHECKPOINT, RequestError

if TYPE_CHECKING:
    from webui.core.sampling.catalog import SamplerCatalog
    from webui.core.types import Txt2ImgRequest

# name -> (torch interpolate mode, antialias)
LATENT_UPSCALE_MODES: Final[Mapping[str, tuple[str, bool]]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS: Final[Mapping[str, Image.Resampling]] = {
    "None": Image.Resampling.LANCZOS,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
UPSCALERS: Final = (*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS)


def request_target(request: Txt2ImgRequest) -> HiresTarget:
    return request.hr_target


def truncate(latents: torch.Tensor, target: HiresTarget) -> torch.Tensor:
    """Crop the upscaled latents to the requested aspect ratio, centred (A1111's split: floor before)."""
    ty, tx = target.truncate_y, target.truncate_x
    h, w = latents.shape[-2:]
    return latents[..., ty // 2 : h - (ty + 1) // 2, tx // 2 : w - (tx + 1) // 2]


def is_latent(upscaler: str) -> bool:
    return upscaler in LATENT_UPSCALE_MODES


def upscale_latents(latents: torch.Tensor, upscaler: str, target: HiresTarget) -> torch.Tensor:
    """First-pass latents to the second pass's latents with a latent upscale mode."""
    mode, antialias = LATENT_UPSCALE_MODES[upscaler]
    d = LATENT_DOWNSCALE
    size = (target.upscale_to_y // d, target.upscale_to_x // d)
    out = torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)
    return truncate(out, target)


def upscale_image(image: Image.Image, upscaler: str, target: HiresTarget) -> Image.Image:
    """A decoded first-pass image resized to the upscale size (encode it, then `truncate` the latents)."""
    return image.resize((target.upscale_to_x, target.upscale_to_y), resample=IMAGE_UPSCALERS[upscaler])


def check_upscaler(name: str, extra: Iterable[str] = ()) -> None:
    """An upscaler name must be one of ours or one an extension provides (the engine checks at run)."""
    valid = [*UPSCALERS, *extra]
    if name not in valid:
        raise RequestError("hr_upscaler", f"unknown upscaler {name!r}: valid are {', '.join(valid)}")


def second_pass_sampler(
    request: Txt2ImgRequest, samplers: SamplerCatalog | None = None, flow: bool = False
) -> tuple[str, str]:
    """(sampler name, schedule type) of the second pass (see Txt2ImgRequest.hr_sampler); `flow` for
    a flow-matching model."""
    return request.hr_sampler(samplers, flow)


def second_pass_steps(request: Txt2ImgRequest) -> int:
    return request.hr_second_pass_steps or request.steps


def infotext_params(
    request: Txt2ImgRequest, samplers: SamplerCatalog | None = None, flow: bool = False
) -> dict[str, object]:
    """A1111's infotext keys for a hires request ({} without enable_hr); None values are left out.
    ("Hires checkpoint" is the engine's: it names the file the request's name resolved to.)"""
    if not request.enable_hr:
        return {}
    by_size = request.hr_resize_x != 0 or request.hr_resize_y != 0
    sampler, schedule = second_pass_sampler(request, samplers, flow)
    return {
        "Denoising strength": request.denoising_strength,
        "Hires upscale": None if by_size else request.hr_scale,
        "Hires resize": f"{request.hr_resize_x}x{request.hr_resize_y}" if by_size else None,
        "Hires steps": request.hr_second_pass_steps or None,
        "Hires upscaler": request.hr_upscaler,
        "Hires sampler": sampler if request.hr_sampler_name and sampler != request.sampler_name else None,
        "Hires schedule type": schedule if request.hr_scheduler and schedule != request.scheduler else None,
        "Hires prompt": request.hr_prompt
        if request.hr_prompt and request.hr_prompt != request.prompt
        else None,
        "Hires negative prompt": (
            request.hr_negative_prompt
            if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt
            else None
        ),
    }


def fields_from_infotext(params: Mapping[str, str]) -> dict[str, object]:
    """Txt2ImgRequest hires fields from parsed infotext (outputs.infotext.parse_infotext); {} if none.

    Hires was on when "Hires upscale" or "Hires resize" is present; keys that are missing keep the
    request's defaults (the writer leaves out values that equal the first pass's). A malformed number
    raises ValueError.
    """
    if "Hires upscale" not in params and "Hires resize" not in params:
        return {}
    out: dict[str, object] = {"enable_hr": True}
    if "Denoising strength" in params:
        out["denoising_strength"] = float(params["Denoising strength"])
    if "Hires upscale" in params:
        out["hr_scale"] = float(params["Hires upscale"])
    if "Hires resize" in params:
        x, _, y = params["Hires resize"].partition("x")
        out["hr_resize_x"], out["hr_resize_y"] = int(x), int(y)
    if "Hires steps" in params:
        out["hr_second_pass_steps"] = int(params["Hires steps"])
    if "Hires upscaler" in params:
        out["hr_upscaler"] = params["Hires upscaler"]
    if "Hires sampler" in params:
        out["hr_sampler_name"] = params["Hires sampler"]
    if "Hires schedule type" in params:
        out["hr_scheduler"] = params["Hires schedule type"]
    if params.get("Hires checkpoint", SAME_CHECKPOINT) != SAME_CHECKPOINT:
        out["hr_checkpoint_name"] = params["Hires checkpoint"]  # A1111's short title: "name [hash]"
    if "Hires prompt" in params:
        out["hr_prompt"] = params["Hires prompt"]
    if "Hires negative prompt" in params:
        out["hr_negative_prompt"] = params["Hires negative prompt"]
    return out
