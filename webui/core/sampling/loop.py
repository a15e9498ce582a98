"""The classifier-free-guided denoising loop, written to read like the maths.

    for each timestep t:
        eps_u, eps_c = unet([x, x], t, [uncond, cond])        # one batch
        eps = eps_u + cfg * (eps_c - eps_u)                     # guidance
        x = scheduler.step(eps, t, x)

Around it: named hook points with a typed, mutable step state (extensions may read or replace latents
and the guided prediction), a progress callback with ETA and an optional cheap preview, and a cancel
token checked before every step. With the same components, scheduler, generators and embeddings it
computes exactly what diffusers' StableDiffusion(XL)Pipeline computes (tests/test_parity.py).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from webui.core.prompts.conditioning import ScheduledConditioning, step_groups
from webui.core.prompts.encode import Conditioning


class HookPoint(Enum):
    BEFORE_STEP = "before_step"
    AFTER_CFG = "after_cfg"
    AFTER_STEP = "after_step"


@dataclass
class StepState:
    """What a hook sees (and may change) at one step. `step` counts from 0."""

    step: int
    total: int
    timestep: torch.Tensor
    latents: torch.Tensor
    noise_pred: torch.Tensor | None = None


Hook = Callable[[HookPoint, StepState], None]


@dataclass(frozen=True)
class Progress:
    step: int  # steps done, 1..total
    total: int
    elapsed: float
    eta: float  # seconds left in this sampling pass
    latents: torch.Tensor | None = None  # for previews; the consumer decides whether to render


ProgressCallback = Callable[[Progress], None]


@dataclass
class CancelToken:
    """Interrupt stops the whole job; skip stops the current batch and goes on with the next."""

    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def take_skip(self) -> bool:
        """True once per skip request."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False


class Stopped(Exception):
    """Sampling was interrupted or skipped; `latents` holds the state reached."""

    def __init__(self, latents: torch.Tensor, interrupted: bool) -> None:
        super().__init__("interrupted" if interrupted else "skipped")
        self.latents = latents
        self.interrupted = interrupted


def step_kwargs(
    scheduler: Any,
    generators: Sequence[torch.Generator] | None,
    eta: float | None,
    churn: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The extra arguments this scheduler's step() accepts (as diffusers' pipelines pass them).

    `churn` holds the Karras-style noise controls (s_churn, s_tmin, s_tmax, s_noise); they reach only
    the schedulers whose step() takes them (Euler).
    """
    accepted = set(inspect.signature(scheduler.step).parameters)
    kw: dict[str, Any] = {}
    if "generator" in accepted and generators is not None:
        kw["generator"] = list(generators)
    if "eta" in accepted:
        kw["eta"] = 0.0 if eta is None else eta
    kw.update({k: v for k, v in (churn or {}).items() if k in accepted})
    return kw


def predict(
    unet: Any,
    x: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
    groups: int,
    per_image: bool,
) -> torch.Tensor:
    """The UNet's prediction for a batch laid out group by group: [uncond_0..uncond_n, cond_0..cond_n, ...].

    With `per_image`, each image's rows (one per group) go through the UNet in their own call.
    Convolution and matmul kernels pick different algorithms for different batch sizes, so a batched
    call rounds differently in the last bits; one call per image makes image i of a batch bit-identical
    to a single run with its seed, at some cost in GPU throughput for large batches.
    """
    n = x.shape[0] // groups
    if not per_image or n == 1:
        return unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]  # type: ignore[no-any-return]
    outs = []
    for i in range(n):
        idx = [j * n + i for j in range(groups)]
        extra = {k: v[idx] for k, v in added.items()} if added is not None else None
        outs.append(
            unet(x[idx], t, encoder_hidden_states=embeds[idx], added_cond_kwargs=extra, return_dict=False)[0]
        )
    return torch.cat([o[j : j + 1] for j in range(groups) for o in outs])


CondInput = Conditioning | ScheduledConditioning


def _step_key(cond: CondInput, uncond: CondInput, step: int) -> tuple[int, ...]:
    """Identifies the conditioning a step uses (same key: same UNet text inputs as the step before)."""
    if isinstance(cond, ScheduledConditioning) and isinstance(uncond, ScheduledConditioning):
        conds, _ = cond.at(step)
        return tuple(id(c) for c in [uncond.at(step)[0][0], *conds])
    return (id(cond), id(uncond))


def _step_conds(
    cond: CondInput, uncond: CondInput, step: int, n: int, guided: bool
) -> tuple[list[Conditioning], list[float]]:
    """The conditioning groups of one step, uncond first when guided, each with n rows."""
    if isinstance(cond, Conditioning) and isinstance(uncond, Conditioning):  # fixed: one row per image
        return ([uncond, cond] if guided else [cond]), [1.0]
    if not isinstance(cond, ScheduledConditioning) or not isinstance(uncond, ScheduledConditioning):
        raise TypeError("cond and uncond must both be Conditioning or both ScheduledConditioning")
    groups, weights = step_groups(cond, uncond, step, n)
    return (groups if guided else groups[1:]), weights


def _needs_uncond(cond: CondInput, cfg_scale: float) -> bool:
    if isinstance(cond, ScheduledConditioning) and [p.weight for p in cond.parts] != [1.0]:
        return True  # composable diffusion combines every part against the uncond prediction
    return cfg_scale != 1.0


def _guide(pred: torch.Tensor, groups: int, weights: list[float], cfg_scale: float) -> torch.Tensor:
    chunks = pred.chunk(groups)
    pred_uncond = chunks[0]
    if weights == [1.0]:
        return pred_uncond + cfg_scale * (chunks[1] - pred_uncond)
    out = pred_uncond
    for w, pred_cond in zip(weights, chunks[1:], strict=True):
        out = out + (w * cfg_scale) * (pred_cond - pred_uncond)
    return out


def denoise(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    cond: CondInput,
    uncond: CondInput,
    cfg_scale: float,
    *,
    time_ids: torch.Tensor | None = None,
    image_cond: torch.Tensor | None = None,
    extra_step: dict[str, Any] | None = None,
    hooks: Sequence[Hook] = (),
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 0,
    per_image: bool = True,
) -> torch.Tensor:
    """Run the scheduler's timesteps (already set) from `latents`; return the final latents.

    `cond`/`uncond` are either fixed `Conditioning`s with one row per image, or
    `ScheduledConditioning`s (prompt editing and `AND` parts) that give each step its own
    conditioning, repeated for the batch. With several `AND` parts the guided prediction is
    uncond + cfg * sum(weight_i * (cond_i - uncond)) (composable diffusion, as A1111).
    `time_ids` (SDXL size/crop conditioning, one row) and `image_cond` (9-channel inpainting UNets:
    mask + masked-image latents, one per image) are passed to the UNet as diffusers' pipelines do.
    `per_image` runs the UNet once per image (see `predict`).
    """
    guided = _needs_uncond(cond, cfg_scale)
    n = latents.shape[0]
    timesteps = scheduler.timesteps
    total = len(timesteps)
    start = time.perf_counter()
    last_key: tuple[int, ...] = ()
    embeds = torch.empty(0)
    added: dict[str, torch.Tensor] | None = None
    groups: list[Conditioning] = []
    weights: list[float] = []
    for i, t in enumerate(timesteps):
        if cancel is not None and (cancel.interrupted or cancel.take_skip()):
            raise Stopped(latents, cancel.interrupted)
        key = _step_key(cond, uncond, i)
        if key != last_key:
            groups, weights = _step_conds(cond, uncond, i, n, guided)
            embeds, added = _unet_inputs(groups, time_ids, latents.device)
            last_key = key
        state = StepState(i, total, t, latents)
        for hook in hooks:
            hook(HookPoint.BEFORE_STEP, state)
        x = torch.cat([state.latents] * len(groups))
        x = scheduler.scale_model_input(x, t)
        if image_cond is not None:  # inpainting UNets: mask and masked-image latents as extra channels
            x = torch.cat([x, torch.cat([image_cond] * len(groups))], dim=1)
        pred = predict(unet, x, t, embeds, added, len(groups), per_image)
        if guided:
            pred = _guide(pred, len(groups), weights, cfg_scale)
        state.noise_pred = pred
        for hook in hooks:
            hook(HookPoint.AFTER_CFG, state)
        state.latents = scheduler.step(
            state.noise_pred, t, state.latents, **(extra_step or {}), return_dict=False
        )[0]
        for hook in hooks:
            hook(HookPoint.AFTER_STEP, state)
        latents = state.latents
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            show = preview_every > 0 and ((i + 1) % preview_every == 0 or i + 1 == total)
            on_progress(
                Progress(
                    i + 1, total, elapsed, elapsed / (i + 1) * (total - i - 1), latents if show else None
                )
            )
    return latents


def _unet_inputs(
    groups: Sequence[Conditioning], time_ids: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """encoder_hidden_states and SDXL's added conditioning for a step's groups."""
    embeds = torch.cat([g.embeds for g in groups])
    if groups[0].pooled is None:
        return embeds, None
    if time_ids is None or any(g.pooled is None for g in groups):
        raise ValueError("an SDXL model needs pooled embeddings and time ids for every prompt")
    pooled = torch.cat([g.pooled for g in groups if g.pooled is not None])
    ids = time_ids.to(device=device, dtype=embeds.dtype)
    return embeds, {"text_embeds": pooled, "time_ids": ids.repeat(pooled.shape[0] // ids.shape[0], 1)}
