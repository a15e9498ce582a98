"""The guided denoising loop, written to read like the maths.

    for each timestep t:
        eps_u, eps_c = model([x, x], t, [uncond, cond])       # one batch, through the family's call
        eps = eps_u + cfg * (eps_c - eps_u)                     # guidance (the family's strategy)
        x = scheduler.step(eps, t, x)

Around it: named hook points with a typed, mutable state each (`Hook`s get a `StepState` at
BEFORE_STEP, AFTER_CFG and AFTER_STEP: they may read or replace latents and the guided prediction;
`ModelHook`s get a `ModelCallState` at BEFORE_MODEL: they may add model inputs such as ControlNet
residuals), a progress callback with ETA and an optional cheap preview, and a cancel token checked
before every step. With the same components, scheduler, generators and embeddings it
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

from webui.core.families.unet import UNET_CALL
from webui.core.prompts.conditioning import ScheduledConditioning, step_groups
from webui.core.prompts.encode import Conditioning
from webui.core.sampling.guidance import CFG, CondInput, Guidance
from webui.core.sampling.model_inputs import DenoiserCall, ModelInputs


class HookPoint(Enum):
    BEFORE_STEP = "before_step"
    BEFORE_MODEL = "before_model"  # `ModelHook`s only, with a ModelCallState
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


@dataclass
class ModelCallState:
    """What a BEFORE_MODEL hook sees: the step and the model inputs of the whole batch, which it may
    change or add to (`inputs.extra`) for this call only. The batch is laid out group by group, each
    group one row per image (`images`); when guided, the negative prompt's groups come first (one; two
    for an edit model): their `uncond_rows` rows (0 unguided). With `per_image` the model runs once
    per image (rows i, images + i, ...): a hook that runs a model of its own does the same to keep
    image i of a batch bit-identical to a single run (see `predict`).

    `denoiser_kwargs(inputs)` and `denoiser_latents(latents)` say what the family's call gives the
    denoiser (SD3 / Flux: the transformer's keyword arguments, latents packed as Flux sees them), so a
    hook that runs a model beside it (an SD3 or Flux ControlNet) gives that model the same inputs."""

    step: int
    total: int
    inputs: ModelInputs
    uncond_rows: int = 0
    images: int = 1
    per_image: bool = False
    call: DenoiserCall | None = None  # the family's call, which the two methods below ask

    def denoiser_kwargs(self, inputs: ModelInputs | None = None) -> dict[str, Any]:
        """The keyword arguments the denoiser gets for `inputs` (default: this call's), hooks' `extra`
        aside. TypeError for a family whose call does not say (the UNet families')."""
        method = getattr(self.call, "model_kwargs", None)
        if method is None:
            raise TypeError("this model family's call does not expose its denoiser inputs")
        return dict(method(self.inputs if inputs is None else inputs))

    def denoiser_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents as the denoiser sees them (Flux: 2x2 patches packed into tokens)."""
        method = getattr(self.call, "model_latents", None)
        if method is None:
            raise TypeError("this model family's call does not expose its latent layout")
        out: torch.Tensor = method(latents)
        return out


ModelHook = Callable[[HookPoint, ModelCallState], None]


@dataclass(frozen=True)
class ModelSwitch:
    """From the timestep at index `at` on, the loop calls `model` with its own conditioning and size
    conditioning (a refiner taking over); the scheduler and its state go on as they are."""

    at: int
    model: Any
    cond: CondInput
    uncond: CondInput
    time_ids: torch.Tensor | None = None


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
    """Interrupt stops the whole job (keeping the partly finished pictures of the batch it stopped,
    as A1111, unless `keep_partial` is False: a shutdown that will run the job again); skip stops the
    current batch and goes on with the next."""

    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)
    _drop_partial: threading.Event = field(default_factory=threading.Event)

    def interrupt(self, keep_partial: bool = True) -> None:
        if not keep_partial:
            self._drop_partial.set()
        self._interrupt.set()

    @property
    def keeps_partial(self) -> bool:
        return self._interrupt.is_set() and not self._drop_partial.is_set()

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
    """Sampling was interrupted or skipped; `latents` holds the state reached and `denoised` the
    scheduler's estimate of the finished latents at that point (when its step gives one).

    A task that keeps the partly finished pictures of an interrupted batch sets `pictures` (and
    `params`, their infotext keys) before letting this go on up."""

    def __init__(
        self, latents: torch.Tensor, interrupted: bool, denoised: torch.Tensor | None = None
    ) -> None:
        super().__init__("interrupted" if interrupted else "skipped")
        self.latents = latents
        self.interrupted = interrupted
        self.denoised = denoised
        self.pictures: list[Any] | None = None
        self.params: list[dict[str, object]] | None = None

    @property
    def best(self) -> torch.Tensor:
        """What to decode for a partly finished picture: the denoised estimate, else the latents."""
        return self.denoised if self.denoised is not None else self.latents


def step_kwargs(
    scheduler: Any,
    generators: Sequence[torch.Generator] | None,
    eta: float | None,
    churn: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The extra arguments this scheduler's step() accepts (as diffusers' pipelines pass them).

    `churn` holds the Karras-style noise controls (s_churn, s_tmin, s_tmax, s_noise); they reach only
    the schedulers whose step() takes them (Euler). No `eta` leaves the scheduler's own default (0 for
    diffusers' DDIM, 1 for our ancestral/SDE samplers, as A1111's eta settings).
    """
    accepted = set(inspect.signature(scheduler.step).parameters)
    kw: dict[str, Any] = {}
    if "generator" in accepted and generators is not None:
        kw["generator"] = list(generators)
    if "eta" in accepted and eta is not None:
        kw["eta"] = eta
    kw.update({k: v for k, v in (churn or {}).items() if k in accepted})
    return kw


def runs_guided(guidance: Guidance, cond: CondInput, cfg_scale: float, scheduler: Any) -> bool:
    """Whether the loop computes the negative prompt's prediction: when guidance needs it, or when the
    scheduler steps with it (CFG++, even at CFG 1). Tasks size per-row inputs (time ids) with this."""
    return guidance.needs_uncond(cond, cfg_scale) or bool(getattr(scheduler, "needs_uncond", False))


def predict(call: DenoiserCall, inputs: ModelInputs, groups: int, per_image: bool) -> torch.Tensor:
    """The model's prediction for a batch laid out group by group: [uncond_0..uncond_n, cond_0..cond_n, ...].

    With `per_image`, each image's rows (one per group) go through the model in their own call.
    Convolution and matmul kernels pick different algorithms for different batch sizes, so a batched
    call rounds differently in the last bits; one call per image makes image i of a batch bit-identical
    to a single run with its seed, at some cost in GPU throughput for large batches.
    """
    n = inputs.rows // groups
    if not per_image or n == 1:
        return call(inputs)
    outs = [call(inputs.select([j * n + i for j in range(groups)])) for i in range(n)]
    return torch.cat([o[j : j + 1] for j in range(groups) for o in outs])


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


def denoise(
    model: Any,
    scheduler: Any,
    latents: torch.Tensor,
    cond: CondInput,
    uncond: CondInput,
    cfg_scale: float,
    *,
    call: DenoiserCall = UNET_CALL,
    guidance: Guidance = CFG,
    time_ids: torch.Tensor | None = None,
    image_cond: torch.Tensor | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    extra_step: dict[str, Any] | None = None,
    hooks: Sequence[Hook] = (),
    model_hooks: Sequence[ModelHook] = (),
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview_every: int = 0,
    per_image: bool = True,
    switch: ModelSwitch | None = None,
) -> torch.Tensor:
    """Run the scheduler's timesteps (already set) from `latents`; return the final latents.

    `model` is the denoiser, called through the family's `call` (default: a diffusers UNet, as
    SD1/SD2/SDXL) and guided by its `guidance` (default: CFG).
    `cond`/`uncond` are either fixed `Conditioning`s with one row per image, or
    `ScheduledConditioning`s (prompt editing and `AND` parts) that give each step its own
    conditioning, repeated for the batch. With several `AND` parts the guided prediction is
    uncond + cfg * sum(weight_i * (cond_i - uncond)) (composable diffusion, as A1111).
    `time_ids` (SDXL size/crop conditioning, one row or one per row) and `image_cond` (inpainting
    denoisers: mask + masked-image latents; edit models: the source image's latents; one row per image,
    laid out per group by `guidance.rows`) reach the model through `call`;
    `model_kwargs` too (inputs the family's call reads every step, e.g. Flux's distilled guidance).
    `per_image` runs the model once per image (see `predict`). `switch` hands the remaining steps to
    another model of the same architecture (A1111's refiner): the latents, the scheduler's state, the
    hooks and the step count go on; only the model and its conditioning change.
    """
    # a scheduler that steps with the unguided prediction (CFG++) gets it even at CFG 1
    wants_uncond = "uncond_output" in inspect.signature(scheduler.step).parameters
    guided = runs_guided(guidance, cond, cfg_scale, scheduler)
    n = latents.shape[0]
    timesteps = scheduler.timesteps
    total = len(timesteps)
    start = time.perf_counter()
    last_key: tuple[int, ...] = ()
    text: dict[str, Any] = {}
    groups: list[Conditioning] = []
    step_image_cond: torch.Tensor | None = None
    weights: list[float] = []
    denoised: torch.Tensor | None = None  # the last step's estimate of the finished latents
    for i, t in enumerate(timesteps):
        total = max(len(timesteps), i + 1)  # an adaptive sampler's count is an estimate that moves
        if cancel is not None and (cancel.interrupted or cancel.take_skip()):
            raise Stopped(latents, cancel.interrupted, denoised)
        if switch is not None and i == switch.at:
            model, cond, uncond, time_ids = switch.model, switch.cond, switch.uncond, switch.time_ids
            last_key = ()
        key = _step_key(cond, uncond, i)
        if key != last_key:
            groups, weights = _step_conds(cond, uncond, i, n, guided)
            groups, step_image_cond = guidance.rows(groups, image_cond)
            text = {**call.text_inputs(groups, time_ids, latents.device), **(model_kwargs or {})}
            last_key = key
        state = StepState(i, total, t, latents)
        for hook in hooks:
            hook(HookPoint.BEFORE_STEP, state)
        x = torch.cat([state.latents] * len(groups))
        scale_input = getattr(scheduler, "scale_model_input", None)  # flow-matching schedulers have none
        inputs = ModelInputs(
            model,
            scale_input(x, t) if scale_input is not None else x,
            t,
            dict(text),
            step_image_cond,
        )
        if model_hooks:
            uncond_rows = (len(groups) - len(weights)) * n  # the negative prompt's groups come first
            call_state = ModelCallState(i, total, inputs, uncond_rows, n, per_image, call)
            for model_hook in model_hooks:
                model_hook(HookPoint.BEFORE_MODEL, call_state)
            inputs = call_state.inputs
        pred = predict(call, inputs, len(groups), per_image)
        step_extra = dict(extra_step or {})
        if wants_uncond and guided:
            step_extra["uncond_output"] = pred.chunk(len(groups))[0]
        if len(groups) > 1:  # uncond and/or several AND parts
            pred = guidance.combine(pred, len(groups), weights, cfg_scale)
        state.noise_pred = pred
        for hook in hooks:
            hook(HookPoint.AFTER_CFG, state)
        out = scheduler.step(state.noise_pred, t, state.latents, **step_extra, return_dict=False)
        state.latents = out[0]
        # most diffusers schedulers also give their x0 estimate (pred_original_sample)
        x0 = out[1] if len(out) > 1 else None
        denoised = x0 if isinstance(x0, torch.Tensor) and x0.shape == out[0].shape else None
        for hook in hooks:
            hook(HookPoint.AFTER_STEP, state)
        latents = state.latents
        total = max(len(timesteps), i + 1)  # after the step: an adaptive run's count is exact at its end
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            show = preview_every > 0 and ((i + 1) % preview_every == 0 or i + 1 == total)
            on_progress(
                Progress(
                    i + 1, total, elapsed, elapsed / (i + 1) * (total - i - 1), latents if show else None
                )
            )
    return latents
