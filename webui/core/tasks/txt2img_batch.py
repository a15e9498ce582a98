"""One txt2img batch: seeded noise -> first pass -> (hires fix: upscale -> second pass) -> pictures.

Hires fix follows A1111: the first pass at width x height; the latents (latent upscalers) or the decoded
pictures (image upscalers, encoded again) are brought to the target size; new noise of the target size
comes from the same seeds; an img2img pass with its own steps, sampler, prompts and denoising strength
finishes the picture.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from PIL import Image

from webui.core import families
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.loop import Stopped
from webui.core.tasks import hires
from webui.core.tasks.context import BatchContext, PassModel, decode_each
from webui.core.tasks.img2img import encode_init, start_step
from webui.core.tasks.passes import pass_scheduler, run_img2img_pass
from webui.core.tasks.refiner import last_model
from webui.core.tasks.txt2img import run_txt2img
from webui.core.types import Txt2ImgRequest


def total_steps(request: Txt2ImgRequest) -> int:
    """Sampling steps of one batch, both passes (for progress)."""
    if not request.enable_hr:
        return request.steps
    second = hires.second_pass_steps(request)
    return request.steps + second - start_step(second, request.denoising_strength)


def make_batch(
    ctx: BatchContext, request: Txt2ImgRequest, seeds: list[int], subseeds: list[int]
) -> list[Image.Image]:
    """The batch's pictures. Interrupted, the partly finished pictures of the pass it stopped in go up
    with the Stopped (`pictures`) when the context keeps them."""
    try:
        return _make_batch(ctx, request, seeds, subseeds)
    except Stopped as stop:
        if ctx.keeps_partial(stop):
            stop.pictures = decode_each(ctx.parts, stop.best, ctx.per_image)
        raise


def _make_batch(
    ctx: BatchContext, request: Txt2ImgRequest, seeds: list[int], subseeds: list[int]
) -> list[Image.Image]:
    parts = ctx.parts
    total = total_steps(request)
    sched = pass_scheduler(
        ctx.samplers,
        parts,
        request.sampler_name,
        request.scheduler,
        width=request.width,
        height=request.height,
        steps=request.steps,
        seeds=seeds,
        eta=request.eta,
    )
    shape = families.of(parts).latent.shape(request.width, request.height)
    resize = (request.seed_resize_from_w, request.seed_resize_from_h)
    noise = noise_mod.initial_noise(shape, seeds, subseeds, request.subseed_strength, resize)
    generators = noise_mod.NoiseSource.for_seeds(
        shape, seeds, eta_noise_seed_delta=request.eta_noise_seed_delta
    ).generator_list()
    refiner = None  # with hires fix the refiner takes over in the second pass (A1111's default)
    if ctx.refiner is not None and not request.enable_hr:
        refiner = ctx.refiner.stage(ctx.prompt, ctx.negative_prompt, request.steps)
    latents = run_txt2img(
        parts,
        sched.scheduler,
        noise,
        generators,
        ctx.cond,
        ctx.uncond,
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        eta=request.eta,
        churn=ctx.churn,
        timestep_kwargs=sched.timestep_kwargs,
        distilled_cfg_scale=request.distilled_cfg_scale,
        refiner=refiner,
        **ctx.loop_args(0, total),
    )
    if not request.enable_hr:
        return decode_each(last_model(parts, refiner, request.steps), latents, ctx.per_image, ctx.vae_tiling)
    return _second_pass(ctx, request, seeds, subseeds, latents, total)


def _second_pass(
    ctx: BatchContext,
    request: Txt2ImgRequest,
    seeds: list[int],
    subseeds: list[int],
    latents: torch.Tensor,
    total: int,
) -> list[Image.Image]:
    with ctx.second_pass() if ctx.second_pass is not None else nullcontext(ctx.model) as model:
        return _run_second_pass(ctx, model, request, seeds, subseeds, latents, total)


def _run_second_pass(
    ctx: BatchContext,
    model: PassModel,
    request: Txt2ImgRequest,
    seeds: list[int],
    subseeds: list[int],
    latents: torch.Tensor,
    total: int,
) -> list[Image.Image]:
    """The second pass on `model` (the job's, or the hires checkpoint): the first pass's pictures are
    decoded by the job's VAE and encoded by the second pass's, as A1111 switches models in between."""
    parts = model.parts
    family = families.of(parts)
    target = hires.request_target(request)
    if hires.is_latent(request.hr_upscaler):
        init = hires.upscale_latents(latents, request.hr_upscaler, target)
    else:
        size = (target.upscale_to_x, target.upscale_to_y)
        by_extension = ctx.upscalers.get(request.hr_upscaler)
        pictures = [
            by_extension(p, *size) if by_extension else hires.upscale_image(p, request.hr_upscaler, target)
            for p in decode_each(ctx.parts, latents, ctx.per_image, ctx.vae_tiling)
        ]
        init = hires.truncate(encode_init(parts, pictures, ctx.vae_tiling), target)
    h, w = target.latent_size
    shape = (family.latent.channels, h, w)
    noise = noise_mod.initial_noise(shape, seeds, subseeds, request.subseed_strength)
    generators = noise_mod.NoiseSource.for_seeds(
        shape, seeds, eta_noise_seed_delta=request.eta_noise_seed_delta
    ).generator_list()
    sampler, schedule = hires.second_pass_sampler(request, ctx.samplers, family.flow_matching)
    steps = hires.second_pass_steps(request)
    width, height = target.size
    sched = pass_scheduler(
        ctx.samplers,
        parts,
        sampler,
        schedule,
        width=width,
        height=height,
        steps=steps,
        seeds=seeds,
        eta=request.eta,
    )
    # the second pass's prompts, scheduled over its own steps (as A1111)
    prompts = ctx.hr_prompts or (ctx.prompt, ctx.negative_prompt)
    cond, uncond = model.encode(*prompts, steps)
    refiner = ctx.refiner.stage(*prompts, steps) if ctx.refiner is not None else None
    out = run_img2img_pass(
        parts,
        sched,
        init,
        noise,
        generators,
        cond,
        uncond,
        steps=steps,
        strength=request.denoising_strength,
        cfg_scale=request.cfg_scale,
        distilled_cfg_scale=request.distilled_cfg_scale,
        width=width,
        height=height,
        eta=request.eta,
        churn=ctx.churn,
        refiner=refiner,
        **ctx.loop_args(request.steps, total),
    )
    ran = steps - start_step(steps, request.denoising_strength)
    return decode_each(last_model(parts, refiner, ran), out, ctx.per_image, ctx.vae_tiling)
