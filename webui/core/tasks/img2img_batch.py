"""One img2img batch: init images (and mask) -> latents -> the loop from the strength's step -> pictures.

`prepare_inputs` runs once per request: every input image is sanitised (orientation, mode, size limits),
the mask is checked and resized, and outpainting extends the canvas and builds its mask. `make_batch`
then prepares each image of the batch (resize mode, mask blur/invert, "only masked" crop, masked
content), encodes it, runs the loop with the mask blended in (or fed to an inpainting denoiser),
decodes, and puts the result back into the original picture with untouched pixels restored exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from webui.core import families
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.loop import Stopped
from webui.core.tasks.context import BatchContext, decode_each
from webui.core.tasks.img2img import (
    encode_init,
    inpaint_image_cond,
    latent_mask,
    start_step,
    to_tensor,
)
from webui.core.tasks.inpaint import PreparedImage, blend_rule, finish_image, infotext_params, prepare_init
from webui.core.tasks.input_images import sanitize_image, sanitize_mask
from webui.core.tasks.outpaint import extend_canvas
from webui.core.tasks.passes import pass_scheduler, run_img2img_pass
from webui.core.tasks.refiner import last_model
from webui.core.tasks.resize import LATENT_UPSCALE, resize_latents
from webui.core.tasks.soft_inpaint import BlendRule, SoftInpainting, difference_opacity, is_soft
from webui.core.types import Img2ImgRequest, RequestError


@dataclass(frozen=True)
class Inputs:
    """The request's images after sanitising (and outpainting): what every batch starts from."""

    images: tuple[Image.Image, ...]
    mask: Image.Image | None
    width: int  # the output size
    height: int


def prepare_inputs(request: Img2ImgRequest, seed: int, size_multiple: int = 8) -> Inputs:
    """The request's images, sanitised (and outpainted: the canvas must be a multiple of `size_multiple`,
    the model family's, a side)."""
    images = [sanitize_image(img, f"init_images[{i}]") for i, img in enumerate(request.init_images)]
    mask = None
    if request.mask is not None:
        soft = request.soft_inpainting or request.differential_diffusion  # A1111: no rounding then
        mask = sanitize_mask(request.mask, images[0].size, round=request.mask_round and not soft)
    width, height = request.width, request.height
    if request.outpaint_pixels:
        extended = []
        for img in images:
            out = extend_canvas(
                img,
                request.outpaint_pixels,
                request.outpaint_directions,
                fill=request.outpaint_fill,
                noise=request.outpaint_noise,
                seed=seed,
                falloff=request.outpaint_falloff,
                color_variation=request.outpaint_color_variation,
                mask=mask if mask is not None and mask.size == img.size else None,
            )
            extended.append(out)
        images = [e.image for e in extended]
        mask = extended[0].mask
        width, height = extended[0].geometry.width, extended[0].geometry.height
        if width % size_multiple or height % size_multiple:
            raise RequestError(
                "outpaint_pixels",
                f"the outpainted canvas would be {width}x{height}: this model needs a multiple of "
                f"{size_multiple} a side",
            )
    return Inputs(tuple(images), mask, width, height)


def total_steps(request: Img2ImgRequest) -> int:
    return request.steps - start_step(request.steps, request.denoising_strength)


def _prepare(request: Img2ImgRequest, inputs: Inputs, image: Image.Image) -> PreparedImage:
    return prepare_init(
        image,
        inputs.mask,
        width=inputs.width,
        height=inputs.height,
        resize_mode=request.resize_mode,
        mask_blur_x=request.mask_blur_x,
        mask_blur_y=request.mask_blur_y,
        inpainting_fill=request.inpainting_fill,
        inpaint_full_res=request.inpaint_full_res,
        inpaint_full_res_padding=request.inpaint_full_res_padding,
        invert=bool(request.inpainting_mask_invert),
    )


def work_image(request: Img2ImgRequest, index: int = 0) -> Image.Image:
    """The picture the pass of `request` denoises from init image `index`, as the pass prepares it:
    the masked region cropped (with its padding) and scaled to width x height for "only masked", else
    the init resized by the request's resize mode. With a mask, the picture is RGBA and its alpha is the
    mask as the pass uses it (blurred; white = repainted). What a ControlNet unit without its own image
    follows (a detailer's sub-pass works on the face's box, not the whole picture)."""
    inputs = prepare_inputs(request, max(request.seed, 0))
    prepared = _prepare(request, inputs, inputs.images[index])
    if prepared.mask is None:
        return prepared.image
    work = prepared.image.convert("RGB")
    work.putalpha(prepared.mask.resize(work.size) if prepared.mask.size != work.size else prepared.mask)
    return work


def composite_opacities(
    rule: BlendRule,
    init: torch.Tensor,
    latents: torch.Tensor,
    mask_latent: torch.Tensor | None,
    width: int,
    height: int,
) -> list[Image.Image] | None:
    """Each picture's opacity over the original in the mask's soft band (None: ordinary compositing):
    soft inpainting's difference composite, or the whole result for differential diffusion."""
    if rule is None or mask_latent is None:
        return None
    if isinstance(rule, SoftInpainting):
        return difference_opacity(init, latents, mask_latent, rule, width, height)
    return [Image.new("L", (width, height), 255) for _ in range(latents.shape[0])]


def make_batch(
    ctx: BatchContext,
    request: Img2ImgRequest,
    inputs: Inputs,
    first_index: int,
    seeds: list[int],
    subseeds: list[int],
) -> tuple[list[Image.Image], list[dict[str, object]]]:
    """The batch's finished pictures and each one's img2img infotext keys."""
    parts = ctx.parts
    sources = [inputs.images[(first_index + i) % len(inputs.images)] for i in range(len(seeds))]
    prepared = [_prepare(request, inputs, img) for img in sources]
    family = families.of(parts)
    init = encode_init(parts, [p.image for p in prepared], ctx.vae_tiling)
    if request.resize_mode == LATENT_UPSCALE:
        init = resize_latents(init, inputs.width, inputs.height, family.latent.downscale)
    shape = family.latent.shape(inputs.width, inputs.height)
    resize = (request.seed_resize_from_w, request.seed_resize_from_h)
    noise = noise_mod.initial_noise(shape, seeds, subseeds, request.subseed_strength, resize)
    generators = noise_mod.NoiseSource.for_seeds(
        shape, seeds, eta_noise_seed_delta=request.eta_noise_seed_delta
    ).generator_list()
    mask_latent = image_cond = None
    masks = [p.mask for p in prepared if p.mask is not None]
    rule = blend_rule(request) if masks else None
    if masks:
        # a soft mask is a per-pixel strength with soft inpainting / differential diffusion; a hard one
        # (only 0 and 255) is rounded as ordinary inpainting rounds it, so it gives ordinary inpainting
        rounded = request.mask_round and not (rule is not None and any(is_soft(m) for m in masks))
        mask_latent = torch.cat([latent_mask(m, shape[1], shape[2], rounded) for m in masks])
        if family.takes_image_cond(parts.denoiser):
            image_cond = torch.cat(
                [
                    inpaint_image_cond(parts, to_tensor([p.cond_image]), m, round=rounded)
                    for p, m in zip(prepared, masks, strict=True)
                ]
            )
    sched = pass_scheduler(
        ctx.samplers,
        parts,
        request.sampler_name,
        request.scheduler,
        width=inputs.width,
        height=inputs.height,
        steps=request.steps,
        seeds=seeds,
        eta=request.eta,
    )
    refiner = None
    if ctx.refiner is not None:
        refiner = ctx.refiner.stage(ctx.prompt, ctx.negative_prompt, request.steps)
    stopped: Stopped | None = None
    try:
        latents = run_img2img_pass(
            parts,
            sched,
            init,
            noise,
            generators,
            ctx.cond,
            ctx.uncond,
            steps=request.steps,
            strength=request.denoising_strength,
            cfg_scale=request.cfg_scale,
            width=inputs.width,
            height=inputs.height,
            eta=request.eta,
            churn=ctx.churn,
            mask_latent=mask_latent,
            image_cond=image_cond,
            image_cfg_scale=request.image_cfg_scale,
            distilled_cfg_scale=request.distilled_cfg_scale,
            inpainting_fill=request.inpainting_fill,
            initial_noise_multiplier=request.initial_noise_multiplier,
            blend=rule,
            refiner=refiner,
            **ctx.loop_args(0, total_steps(request)),
        )
    except Stopped as stop:
        if not ctx.keeps_partial(stop):
            raise
        stopped, latents = stop, stop.best  # finished like a whole picture: pasted back, corrected
    decoder = last_model(parts, refiner, total_steps(request))
    opacities = composite_opacities(rule, init, latents, mask_latent, inputs.width, inputs.height)
    pictures = [
        finish_image(p, pic, opacities[i] if opacities else None)
        for i, (p, pic) in enumerate(
            zip(prepared, decode_each(decoder, latents, ctx.per_image, ctx.vae_tiling), strict=True)
        )
    ]
    params = [
        infotext_params(request, src, only_masked_used=p.box is not None)
        for p, src in zip(prepared, sources, strict=True)
    ]
    if family.takes_edit_image(parts.denoiser) and request.image_cfg_scale is not None:
        params = [{**one, "Image CFG scale": request.image_cfg_scale} for one in params]
    if stopped is not None:
        stopped.pictures, stopped.params = pictures, params
        raise stopped
    return pictures, params
