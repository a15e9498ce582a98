"""The detail pass: for each unit, detect, make the masks, and inpaint each region through a callable.

    result = detail_image(image, request, args, find=..., run=lambda sub: engine.run(sub).images[0].image)

For each active unit, in order, on the image the previous unit left: detect with the unit's model and
confidence, make the masks (masks.region_masks), and for region j run one img2img inpaint request
(`run`) with the region's mask, "only masked" with its padding, the unit's denoise, blur and sizes, its
own steps / CFG / sampler / checkpoint / VAE / CLIP skip / noise multiplier when it asks, and the image's
seed + j (ADetailer's rule). A unit with a ControlNet model sends it with that request as a controlnet
unit (`extension_args.controlnet._units`), which the ControlNet extension runs on that pass alone.
Prompts follow ADetailer: `[SEP]` splits one prompt per region (the last
repeats), an empty prompt is the image's own, `[PROMPT]` inserts it, and `[SKIP]` leaves that region.

The result of each region is pasted with its mask: a pixel outside every region's mask is the input's
pixel, byte for byte, whatever the runner returns. `run` is anything that runs an Img2ImgRequest and
returns its one image: the engine directly (tests, bench) or the plugin API's sub-pass runner.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from webui.plugins.api import GenerationRequest, Img2ImgRequest, UnknownSampler, resolve_sampler

from .detectors import Detection, Detector
from .masks import region_masks
from .units import SAME_SCHEDULER, DetailerArgs, DetailerUnit, controlnet_module, ordinal

RunImg2Img = Callable[[Img2ImgRequest], Image.Image]
FindDetector = Callable[[str], Detector]
_SHARED = (
    "styles", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "sampler_name", "scheduler",
    "steps", "cfg_scale", "distilled_cfg_scale", "clip_skip", "eta", "s_churn", "s_tmin", "s_tmax",
    "s_noise", "eta_noise_seed_delta", "checkpoint", "vae", "modules",
)  # fmt: skip
_SKIP = re.compile(r"^\s*\[SKIP\]\s*$")
CONTROLNET = "controlnet"  # the ControlNet extension, which acts on a sub-pass that names it (API 2.2)


@dataclass(frozen=True)
class UnitReport:
    unit: int  # DetailerUnit.index
    detections: tuple[Detection, ...]
    masks: tuple[Image.Image, ...] = field(repr=False)
    regions_run: int

    @property
    def message(self) -> str:
        name = f"ADetailer {ordinal(self.unit + 1)} unit"
        if not self.masks:
            return f"{name}: nothing detected"
        found, total = len(self.detections), len(self.masks)
        return f"{name}: {found} detected, {self.regions_run} of {total} regions detailed"


@dataclass(frozen=True)
class DetailResult:
    image: Image.Image
    reports: tuple[UnitReport, ...]

    @property
    def changed(self) -> bool:
        return any(r.regions_run for r in self.reports)


def unit_prompts(template: str, own: str) -> list[str]:
    """ADetailer's prompt rules for one unit: one prompt per `[SEP]` part."""
    out = []
    for part in re.split(r"\s*\[SEP\]\s*", template):
        if not part:
            part = own
        elif "[PROMPT]" in part:
            part = part.replace("[PROMPT]", f" {own} ")
        out.append(part)
    return out


def _round8(n: int) -> int:
    return max(8, (n + 7) // 8 * 8)


def _sampler(unit: DetailerUnit, request: GenerationRequest) -> tuple[str, str]:
    if not unit.use_sampler:
        return request.sampler_name, request.scheduler
    if unit.scheduler != SAME_SCHEDULER:
        return unit.sampler, unit.scheduler
    try:  # "same scheduler" unless the unit's combined name ("DPM++ 2M Karras") already names one
        resolve_sampler(unit.sampler, request.scheduler)
        return unit.sampler, request.scheduler
    except UnknownSampler:
        return unit.sampler, "Automatic"


def sub_request(
    unit: DetailerUnit,
    request: GenerationRequest,
    image: Image.Image,
    mask: Image.Image,
    *,
    prompt: str,
    negative_prompt: str,
    seed: int,
    subseed: int,
) -> Img2ImgRequest:
    """The inpaint request for one region of `image` (the mask: "L", white = repaint)."""
    shared: dict[str, Any] = {name: getattr(request, name) for name in _SHARED}
    if unit.inpaint_only_masked:
        size = (
            (unit.inpaint_width, unit.inpaint_height)
            if unit.use_inpaint_width_height
            else (request.width, request.height)
        )
    else:
        size = (_round8(image.width), _round8(image.height))
    sampler_name, scheduler = _sampler(unit, request)
    overrides: dict[str, Any] = {"sampler_name": sampler_name, "scheduler": scheduler}
    if unit.use_steps:
        overrides["steps"] = unit.steps
    if unit.use_cfg_scale:
        overrides["cfg_scale"] = unit.cfg_scale
    if unit.use_clip_skip:
        overrides["clip_skip"] = unit.clip_skip
    if unit.use_checkpoint and unit.checkpoint not in (None, "", "None", "Use same checkpoint"):
        overrides["checkpoint"] = unit.checkpoint
    if unit.use_vae and unit.vae not in (None, "", "None", "Use same VAE"):
        overrides["vae"] = unit.vae
    extension_args: dict[str, Any] = {}
    if unit.controlnet_model not in ("None", ""):
        extension_args[CONTROLNET] = {"_units": [controlnet_unit(unit)]}
    noise = (
        unit.noise_multiplier
        if unit.use_noise_multiplier
        else getattr(request, "initial_noise_multiplier", 1.0)
    )
    return Img2ImgRequest(
        **{**shared, **overrides},
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        subseed=subseed,
        width=size[0],
        height=size[1],
        batch_size=1,
        n_iter=1,
        save_images=False,
        init_images=(image,),
        mask=mask,
        resize_mode=0,
        mask_blur=unit.mask_blur,
        denoising_strength=unit.denoising_strength,
        inpainting_fill=1,
        inpaint_full_res=unit.inpaint_only_masked,
        inpaint_full_res_padding=unit.inpaint_only_masked_padding,
        initial_noise_multiplier=noise,
        extension_args=extension_args,
    )


def controlnet_unit(unit: DetailerUnit) -> dict[str, Any]:
    """The unit's ControlNet as a controlnet-extension unit for the region's inpaint pass. It has no
    image: the ControlNet follows the pass's own picture (with "only masked", the region's crop at the
    pass's size), as ADetailer's ControlNet does."""
    return {
        "module": controlnet_module(unit),
        "model": unit.controlnet_model,
        "weight": unit.controlnet_weight,
        "guidance_start": unit.controlnet_guidance_start,
        "guidance_end": unit.controlnet_guidance_end,
    }


def paste(result: Image.Image, onto: Image.Image, mask: Image.Image) -> Image.Image:
    """`result` where `mask` is not black, `onto` (byte for byte) elsewhere."""
    if result.size != onto.size:
        result = result.resize(onto.size, Image.Resampling.LANCZOS)
    hard = mask.convert("L").point(lambda v: 255 if v else 0)
    return Image.composite(result.convert(onto.mode), onto, hard)


def detail_unit(
    image: Image.Image,
    request: GenerationRequest,
    unit: DetailerUnit,
    detector: Detector,
    run: RunImg2Img,
    *,
    prompt: str,
    negative_prompt: str,
    seed: int,
    subseed: int,
) -> tuple[Image.Image, UnitReport]:
    found = detector.detect(image, unit.confidence)
    masks = region_masks(
        found,
        image.size,
        min_ratio=unit.mask_min_ratio,
        max_ratio=unit.mask_max_ratio,
        k_largest_n=unit.mask_k_largest,
        x_offset=unit.x_offset,
        y_offset=unit.y_offset,
        dilate=unit.dilate_erode,
        mode=unit.mask_merge_invert,
    )
    prompts = unit_prompts(unit.prompt, prompt)
    negatives = unit_prompts(unit.negative_prompt, negative_prompt)
    current, ran = image, 0
    for j, mask in enumerate(masks):
        p = prompts[min(j, len(prompts) - 1)]
        if _SKIP.match(p):
            continue
        n = negatives[min(j, len(negatives) - 1)]
        sub = sub_request(
            unit, request, current, mask, prompt=p, negative_prompt=n, seed=seed + j, subseed=subseed + j
        )
        current = paste(run(sub), current, mask)
        ran += 1
    return current, UnitReport(unit.index, tuple(found), tuple(masks), ran)


def source_image(
    args: DetailerArgs, request: GenerationRequest, decoded: Image.Image, index: int = 0
) -> Image.Image:
    """The picture to detail: the decoded one, or with `skip_img2img` on an img2img request, its init
    image (ADetailer's "skip img2img": the first pass is not wanted, only the detailing of the input)."""
    if args.skip_img2img and isinstance(request, Img2ImgRequest) and request.init_images:
        init: Image.Image = request.init_images[min(index, len(request.init_images) - 1)]
        return init.convert("RGB") if init.mode != "RGB" else init
    return decoded


def detail_image(
    image: Image.Image,
    request: GenerationRequest,
    args: DetailerArgs,
    *,
    find: FindDetector,
    run: RunImg2Img,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    subseed: int | None = None,
) -> DetailResult:
    """`image` detailed by every active unit. `prompt`, `negative_prompt`, `seed` and `subseed` are the
    image's own (after styles, wildcards and the batch offset); by default the request's, whose seed
    must then be resolved (not -1). With `prompt` given, the request's styles are not applied again."""
    if seed is None:
        seed = request.seed
    if seed < 0:
        raise ValueError("detail_image needs the image's resolved seed (the request's is -1)")
    subseed = request.subseed if subseed is None else subseed
    subseed = seed if subseed < 0 else subseed
    base = request if prompt is None else replace(request, styles=())
    own = request.prompt if prompt is None else prompt
    own_negative = request.negative_prompt if negative_prompt is None else negative_prompt
    image = image.convert("RGB")
    reports = []
    for unit in args.active_units:
        image, report = detail_unit(
            image,
            base,
            unit,
            find(unit.model),
            run,
            prompt=own,
            negative_prompt=own_negative,
            seed=seed,
            subseed=subseed,
        )
        reports.append(report)
    return DetailResult(image, tuple(reports))


def union_mask(reports: Sequence[UnitReport], size: tuple[int, int]) -> Image.Image:
    """Every detailed region's mask in one ("L"): what a detail pass may change."""
    out = Image.new("L", size, 0)
    for r in reports:
        for m in r.masks:
            out.paste(255, mask=m.point(lambda v: 255 if v else 0))
    return out
