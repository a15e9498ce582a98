"""img2img and inpainting for the flow-matching families (SD3 / SD3.5, Flux), as diffusers'
StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline and their inpaint pipelines do them.

A flow model's latents at noise level sigma are a straight line between picture and noise, so the init
latents are brought to the first step's level by the line itself (the pipelines' `scale_noise`):

    first = start_step(steps, strength)              the same rule as every family (tasks.img2img)
    sigma = scheduler.sigmas[first * order]
    x = sigma * noise + (1 - sigma) * init           strength 1 starts from the noise itself

then the same loop as txt2img runs the remaining steps. The pipelines compute the start as
int(steps - steps * strength), which is the same index whenever steps x strength is whole (20 x 0.75);
otherwise they run one step more than we do (and than their SD img2img pipelines do).

Inpainting with an ordinary transformer (16 latent channels in; no mask input): after every step the
known region (mask 0) is put back from the init at the next step's sigma, and the clean init after the
last step. Flux's 2x2 packing is its denoiser call's business: latents here are (B, 16, h, w).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from webui.core import families
from webui.core.models.components import Components
from webui.core.sampling.guidance import CondInput
from webui.core.sampling.loop import (
    CancelToken,
    Hook,
    HookPoint,
    ModelHook,
    ProgressCallback,
    StepState,
    denoise,
    step_kwargs,
)
from webui.core.sampling.samplers import set_timesteps
from webui.core.tasks.img2img import ORIGINAL, FromStep, fill_latents, start_step
from webui.core.tasks.refiner import RefinerStage, model_switch
from webui.core.tasks.soft_inpaint import BlendRule, flow_sigma, mix
from webui.core.tasks.txt2img import family_model_kwargs


def noised(init: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The init latents at noise level `sigma` (a 0-d tensor): sigma * noise + (1 - sigma) * init."""
    s = sigma.to(device=init.device, dtype=init.dtype)
    return s * noise + (1.0 - s) * init


class FlowMaskBlend:
    """AFTER_STEP hook: the known region (mask 0) back from the init, at the next step's sigma, mixed in
    by `rule` (None: ordinary inpainting; see soft_inpaint)."""

    def __init__(
        self,
        sigmas: torch.Tensor,
        begin: int,
        init: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        rule: BlendRule = None,
    ) -> None:
        self.sigmas = sigmas
        self.begin = begin
        self.init = init
        self.noise = noise
        self.mask = mask.to(device=init.device, dtype=init.dtype)
        self.rule = rule

    def __call__(self, point: HookPoint, state: StepState) -> None:
        if point is not HookPoint.AFTER_STEP:
            return
        known = self.init
        if state.step + 1 < state.total:
            known = noised(self.init, self.noise, self.sigmas[self.begin + state.step + 1])
        sigma = flow_sigma(float(self.sigmas[self.begin + state.step]))
        state.latents = mix(
            self.rule, known, state.latents, self.mask, step=state.step, total=state.total, sigma=sigma
        )


def run_flow_img2img(
    parts: Components,
    scheduler: Any,
    init_latents: torch.Tensor,
    noise: torch.Tensor,
    generators: Sequence[torch.Generator],
    cond: CondInput,
    uncond: CondInput,
    *,
    steps: int,
    strength: float,
    cfg_scale: float,
    width: int,
    height: int,
    timestep_kwargs: Mapping[str, Any] | None = None,
    distilled_cfg_scale: float | None = None,
    eta: float | None = None,
    churn: Mapping[str, float] | None = None,
    mask_latent: torch.Tensor | None = None,
    inpainting_fill: int = ORIGINAL,
    initial_noise_multiplier: float = 1.0,
    blend: BlendRule = None,
    hooks: Sequence[Hook] = (),
    model_hooks: Sequence[ModelHook] = (),
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 0,
    per_image: bool = True,
    refiner: RefinerStage | None = None,
) -> torch.Tensor:
    """Denoise `init_latents` (B, C, h, w; from `encode_init`) from the step `strength` picks.

    `scheduler` is a fresh flow scheduler and `timestep_kwargs` what its set_timesteps needs (see
    `flow_samplers.make_flow_scheduler`); `noise` has the init latents' shape (unit variance, from the
    image seeds); `mask_latent` (1 = repaint) enables masked content and the per-step blending, mixed
    in by `blend` (soft inpainting, differential diffusion; None: ordinary).
    """
    family = families.of(parts)
    device, dtype = parts.device, parts.dtype
    if init_latents.shape != noise.shape:
        raise ValueError(f"init latents {tuple(init_latents.shape)} and noise {tuple(noise.shape)} differ")
    init = init_latents.to(device=device, dtype=dtype)
    noise = noise.to(device=device, dtype=dtype)
    first = start_step(steps, strength)
    begin = first * int(getattr(scheduler, "order", 1))
    set_timesteps(scheduler, steps, device, begin_index=begin, **(timestep_kwargs or {}))
    if first == steps or begin >= len(scheduler.timesteps):
        return init
    if mask_latent is not None:
        init = fill_latents(init, noise, mask_latent, inpainting_fill)
    start_noise = noise * initial_noise_multiplier
    latents = start_noise if first == 0 else noised(init, start_noise, scheduler.sigmas[begin])
    all_hooks = list(hooks)
    if mask_latent is not None:
        all_hooks.insert(0, FlowMaskBlend(scheduler.sigmas, begin, init, noise, mask_latent, blend))
    guided = family.guidance.needs_uncond(cond, cfg_scale)
    return denoise(
        parts.denoiser,
        FromStep(scheduler, begin),
        latents,
        cond,
        uncond,
        cfg_scale,
        call=family.denoiser,
        guidance=family.guidance,
        time_ids=family.size_conditioning(width, height, init.shape[0], guided),
        model_kwargs=family_model_kwargs(family, distilled_cfg_scale),
        extra_step=step_kwargs(scheduler, generators, eta, churn),
        hooks=all_hooks,
        model_hooks=model_hooks,
        on_progress=on_progress,
        cancel=cancel,
        preview_every=preview_every,
        per_image=per_image,
        switch=model_switch(
            refiner,
            steps - first,
            int(getattr(scheduler, "order", 1)),
            width=width,
            height=height,
            batch=init.shape[0],
            cfg_scale=cfg_scale,
        ),  # fmt: skip
    )
