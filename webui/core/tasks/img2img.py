"""img2img and inpainting in latent space: encode, noise to the starting step, denoise, blend.

How much of the schedule runs (`start_step`) follows diffusers' img2img pipelines, which we document
rather than A1111's k-diffusion variant:

    run = min(int(steps * strength), steps)        steps actually run (the last `run` of `steps`)
    first = steps - run                             index of the first one (x scheduler.order)

A1111 runs int(min(strength, 0.999) * steps) + 1 steps from the same schedule; at 20 steps and 0.75 that
is 16 here 15. Strength 1 starts from pure noise (latents = noise x init_noise_sigma, the diffusers
inpainting convention), so it ignores the init image and is exactly txt2img from the same noise; a
strength that runs no step returns the init latents unchanged.

The init latents are noised to the first timestep with the scheduler's own `add_noise` (sigma-based
schedulers pick the sigma from their begin index, timestep-based ones from the timestep), after the
noise is multiplied by `initial_noise_multiplier` (A1111's "Noise multiplier").

Inpainting:
- a latent mask (B or 1, 1, h, w), 1 = repaint, drives masked content: 2 "latent noise" replaces the
  masked init latents by the image's noise, 3 "latent nothing" by zeros (0 "fill" is done on pixels,
  see masks.fill_masked; 1 "original" leaves them);
- ordinary UNets (latent channels in, no mask): after every step the known region is put back,
  noised to the level the latents are now at:
  latents = add_noise(init, noise, t_next) * (1 - mask) + latents * mask,
  and the clean init after the last step (diffusers' StableDiffusionInpaintPipeline does the same).
  This runs as an AFTER_STEP hook, so the loop itself is unchanged;
- edit UNets (instruct-pix2pix, 8 input channels) see the init image's unscaled latents as extra
  channels, and with an image CFG scale other than 1 run three branches (see guidance.InstructPix2Pix);
- inpainting UNets (9 input channels for SD: the family says) see the mask instead, through
  `image_cond` = cat(mask, masked-image latents) (`inpaint_image_cond`); they are not blended.
  Without an image_cond they get the everything-masked grey conditioning, as in txt2img (A1111's
  img2img without a mask).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.core import families
from webui.core.models.components import Components
from webui.core.sampling.guidance import CondInput, Guidance, InstructPix2Pix
from webui.core.sampling.loop import (
    CancelToken,
    Hook,
    HookPoint,
    ModelHook,
    ProgressCallback,
    StepState,
    denoise,
    runs_guided,
    step_kwargs,
)
from webui.core.sampling.samplers import set_timesteps
from webui.core.tasks.images import encode_init as encode_init  # re-exported: img2img's first step
from webui.core.tasks.images import to_tensor as to_tensor
from webui.core.tasks.refiner import RefinerStage, model_switch
from webui.core.tasks.soft_inpaint import (
    BlendRule,
    DifferentialDiffusion,
    SoftInpainting,
    diffusion_sigma,
    mix,
)
from webui.core.tasks.txt2img import inpaint_model_blank_cond

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3


def start_step(steps: int, strength: float) -> int:
    """Index (in steps, before x scheduler.order) of the first step an img2img of this strength runs."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    return steps - min(int(steps * strength), steps)


def latent_mask(mask: Image.Image, latent_height: int, latent_width: int, round: bool = True) -> torch.Tensor:
    """An "L" mask (255 = repaint) to a (1, 1, h, w) float32 latent mask in 0..1 (A1111: bicubic, rounded)."""
    small = mask.convert("L").resize((latent_width, latent_height), resample=Image.Resampling.BICUBIC)
    m = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)
    if round:
        m = torch.round(m)
    return m[None, None]


def fill_latents(init: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, fill: int) -> torch.Tensor:
    """Masked content in latent space: 2 latent noise, 3 latent nothing; 0 and 1 leave `init` as is."""
    mask = mask.to(device=init.device, dtype=init.dtype)
    if fill == LATENT_NOISE:
        return init * (1 - mask) + noise.to(device=init.device, dtype=init.dtype) * mask
    if fill == LATENT_NOTHING:
        return init * (1 - mask)
    if fill not in (FILL, ORIGINAL):
        raise ValueError(f"inpainting_fill must be 0, 1, 2 or 3, got {fill!r}")
    return init


@torch.no_grad()
def inpaint_image_cond(
    parts: Components, images: torch.Tensor, mask: Image.Image, *, round: bool = True, weight: float = 1.0
) -> torch.Tensor:
    """The 9-channel UNet's extra input: cat(mask at latent size, latents of the masked image).

    `images` (B, 3, H, W) in -1..1 (after any pixel fill), `mask` "L" of size (W, H). The masked image
    is lerp(image, image x (1 - mask), weight), A1111's "Inpainting conditioning mask strength"; at 1
    the masked area is 0, mid-grey.
    """
    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    if round:
        m = torch.round(m)
    if tuple(m.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(f"mask is {tuple(m.shape[-2:])}, images are {tuple(images.shape[-2:])} (h, w)")
    images = images.float()
    masked = torch.lerp(images, images * (1.0 - m), weight)
    z = encode_init(parts, masked)
    small = torch.nn.functional.interpolate(m, size=z.shape[-2:]).to(device=z.device, dtype=z.dtype)
    return torch.cat([small.expand(z.shape[0], -1, -1, -1), z], dim=1)


def edit_image_cond(parts: Components, init_latents: torch.Tensor) -> torch.Tensor:
    """An edit UNet's extra input: the source image's latents as the VAE gives them (its mode, without
    the scaling factor: instruct-pix2pix was trained so; A1111 and diffusers feed the same)."""
    vae = parts.vae.config
    z: torch.Tensor = init_latents.float() / float(vae.scaling_factor)
    shift = getattr(vae, "shift_factor", None)
    if shift:
        z = z + float(shift)
    return z.to(init_latents.dtype)


def time_ids(parts: Components, width: int, height: int, batch: int, guided: bool) -> torch.Tensor | None:
    """The family's size conditioning for the loop (None for SD1/SD2; SDXL's time ids; the refiner's
    aesthetic-score rows, one per UNet row). (With several `AND` prompt parts the loop has more than two
    groups; it repeats these rows only when the count divides, so the refiner needs per-group ids then.)"""
    return families.of(parts).size_conditioning(width, height, batch, guided)


class FromStep:
    """A view of a scheduler whose `timesteps` start at `begin` (everything else is the scheduler's)."""

    def __init__(self, scheduler: Any, begin: int) -> None:
        self._scheduler = scheduler
        self.timesteps = scheduler.timesteps[begin:]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)


class MaskBlend:
    """AFTER_STEP hook: the known region (mask 0) back from the init, noised to the current level, mixed
    in by `rule` (None: ordinary inpainting; soft inpainting or differential diffusion: soft_inpaint)."""

    def __init__(
        self,
        scheduler: Any,
        timesteps: torch.Tensor,
        init: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        rule: BlendRule = None,
    ) -> None:
        self.scheduler = scheduler
        self.timesteps = timesteps
        self.init = init
        self.noise = noise
        self.mask = mask.to(device=init.device, dtype=init.dtype)
        self.rule = rule

    def __call__(self, point: HookPoint, state: StepState) -> None:
        if point is not HookPoint.AFTER_STEP:
            return
        known = self.init
        nxt = state.step + 1
        if nxt < len(self.timesteps):
            t = self.timesteps[nxt : nxt + 1].repeat(self.init.shape[0])
            known = self.scheduler.add_noise(self.init, self.noise, t)
        soft = isinstance(self.rule, SoftInpainting)
        sigma = diffusion_sigma(self.scheduler, state.timestep) if soft else 0.0
        total = len(self.timesteps)
        state.latents = mix(
            self.rule, known, state.latents, self.mask, step=state.step, total=total, sigma=sigma
        )


def run_img2img(
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
    eta: float | None = None,
    churn: Mapping[str, float] | None = None,
    mask_latent: torch.Tensor | None = None,
    image_cond: torch.Tensor | None = None,
    image_cfg_scale: float | None = None,
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
    """Denoise `init_latents` (B, C, h, w; scaled, from `encode_init`) from the step `strength` picks.

    `noise` has the init latents' shape (unit variance, from the image seeds); `mask_latent` (1 =
    repaint) enables masked content and, for 4-channel UNets, the per-step blending; `image_cond` is the
    9-channel UNet's conditioning (`inpaint_image_cond`). An edit (instruct-pix2pix) UNet sees the init
    image's latents (`edit_image_cond`) and is guided by `image_cfg_scale` too (None or 1: plain CFG with
    the image in every branch, as A1111). `refiner` takes over at its fraction of the steps run.
    `blend` picks how the mask mixes the known region back in (soft inpainting, differential diffusion;
    None: ordinary inpainting); inpainting UNets are not blended, except by differential diffusion.
    `scheduler` must be fresh: its timesteps are set here. Returns the final latents.
    """
    family = families.of(parts)
    unet = parts.unet
    device, dtype = parts.device, parts.dtype
    if init_latents.shape != noise.shape:
        raise ValueError(f"init latents {tuple(init_latents.shape)} and noise {tuple(noise.shape)} differ")
    init = init_latents.to(device=device, dtype=dtype)
    noise = noise.to(device=device, dtype=dtype)
    first = start_step(steps, strength)
    begin = first * int(getattr(scheduler, "order", 1))
    set_timesteps(scheduler, steps, device, begin_index=begin)
    timesteps = scheduler.timesteps[begin:]
    if first == steps or len(timesteps) == 0:  # PLMS has one timestep more than steps: check both
        return init
    if mask_latent is not None:
        init = fill_latents(init, noise, mask_latent, inpainting_fill)
    start_noise = noise * initial_noise_multiplier
    if first == 0:
        latents = start_noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(init, start_noise, timesteps[:1].repeat(init.shape[0]))
    all_hooks = list(hooks)
    guidance: Guidance = family.guidance
    if family.takes_edit_image(unet):
        image_cond = edit_image_cond(parts, init_latents)
        if image_cfg_scale is not None and image_cfg_scale != 1.0:
            guidance = InstructPix2Pix(image_cfg_scale)
    elif family.takes_image_cond(unet):
        if image_cond is None:
            image_cond = inpaint_model_blank_cond(parts, init.shape[0], height, width)
        if mask_latent is not None and isinstance(blend, DifferentialDiffusion):  # a schedule, not a blend
            all_hooks.insert(0, MaskBlend(scheduler, timesteps, init, noise, mask_latent, blend))
    elif mask_latent is not None:
        all_hooks.insert(0, MaskBlend(scheduler, timesteps, init, noise, mask_latent, blend))
    guided = runs_guided(guidance, cond, cfg_scale, scheduler)
    return denoise(
        unet,
        FromStep(scheduler, begin),
        latents,
        cond,
        uncond,
        cfg_scale,
        call=family.denoiser,
        guidance=guidance,
        time_ids=family.size_conditioning(width, height, init.shape[0], guided),
        image_cond=image_cond.to(device=device, dtype=dtype) if image_cond is not None else None,
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
