"""Samplers for flow-matching models (SD3 / SD3.5, Flux), under A1111/Forge names.

A flow model predicts the velocity from noise to image; sigma runs from 1 (noise) to 0 along
x = (1 - sigma) * image + sigma * noise, bent toward the noise end by the model's *shift*:
sigma' = shift * sigma / (1 + (shift - 1) * sigma). SD3 uses a fixed shift of 3, Flux schnell 1, and
Flux dev a shift that grows with the image's token count ("dynamic": mu = a linear function of the
sequence length between 256 and 4096 tokens, shift = e^mu). Every sampler here gets the same shifted
schedule: FlowMatch schedulers through `mu`, the multistep solvers through `flow_shift = e^mu`.

Schedules: Simple (the family's own: evenly spaced sigmas, shifted; "Automatic" is the same), Karras,
Exponential and Beta (the spacings diffusers offers on flow sigmas).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FlowSampler:
    name: str
    scheduler_class: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    schedules: tuple[str, ...] = ("Automatic", "Simple", "Karras", "Exponential", "Beta")


_MULTISTEP = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# diffusers' multistep solvers turn Karras/Exponential/Beta spacings of flow sigmas into NaN (sigma 1
# has no log-SNR), except UniPC with Karras: only what runs is offered
_PLAIN = ("Automatic", "Simple")
FLOW_SAMPLERS: tuple[FlowSampler, ...] = (
    FlowSampler("Euler", "FlowMatchEulerDiscreteScheduler"),
    FlowSampler("Euler a", "FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    FlowSampler("Heun", "FlowMatchHeunDiscreteScheduler", schedules=_PLAIN),
    FlowSampler("LCM", "FlowMatchLCMScheduler"),
    FlowSampler(
        "DPM++ 2M", "DPMSolverMultistepScheduler", {**_MULTISTEP, "algorithm_type": "dpmsolver++"}, _PLAIN
    ),
    FlowSampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {**_MULTISTEP, "algorithm_type": "sde-dpmsolver++"},
        _PLAIN,
    ),
    FlowSampler(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {**_MULTISTEP, "algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        _PLAIN,
    ),
    FlowSampler("UniPC", "UniPCMultistepScheduler", _MULTISTEP, (*_PLAIN, "Karras")),
    FlowSampler("DEIS", "DEISMultistepScheduler", _MULTISTEP, _PLAIN),
)
_SPACING = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}


def flow_sampler_names() -> list[str]:
    return [s.name for s in FLOW_SAMPLERS]


def _find(name: str) -> FlowSampler:
    for sampler in FLOW_SAMPLERS:
        if sampler.name.lower() == name.strip().lower():
            return sampler
    raise ValueError(
        f"sampler {name!r} cannot run flow-matching models; valid: {', '.join(flow_sampler_names())}"
    )


def resolve_flow_sampler(sampler_name: str, schedule: str | None) -> tuple[str, str]:
    """(sampler name, schedule label) a flow model runs for a request; ValueError says what is wrong.
    No schedule, or "Automatic", is the family's own: Simple."""
    sampler = _find(sampler_name)
    label = "Simple" if schedule in (None, "", "Automatic") else str(schedule)
    match = next((s for s in sampler.schedules if s.lower() == label.lower()), None)
    if match is None:
        raise ValueError(
            f"{sampler.name} has no {label!r} schedule for flow-matching models; "
            f"valid: {', '.join(sampler.schedules)}"
        )
    return sampler.name, match


def dynamic_mu(config: Mapping[str, Any], image_seq_len: int) -> float:
    """Flux dev's shift exponent for an image of `image_seq_len` tokens (linear in the length)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (top - base) / (max_len - base_len)
    return float(image_seq_len * slope + base - slope * base_len)


@dataclass(frozen=True)
class FlowSchedule:
    scheduler: Any
    timestep_kwargs: dict[str, Any]  # for scheduler.set_timesteps(steps, **timestep_kwargs)


def make_flow_scheduler(
    sampler_name: str, schedule: str | None, family_config: Mapping[str, Any], image_seq_len: int, steps: int
) -> FlowSchedule:
    """A fresh scheduler for one run of a flow model, and what its set_timesteps needs.

    `family_config` is the model's FlowMatchEulerDiscreteScheduler config (shift, dynamic shifting);
    `image_seq_len` is the denoiser's token count for this size (Flux: (h/16) * (w/16)).
    """
    import diffusers

    sampler = _find(sampler_name)
    label = schedule or "Automatic"
    if label not in sampler.schedules:
        raise ValueError(
            f"{sampler.name} has no {label!r} schedule here; valid: {', '.join(sampler.schedules)}"
        )
    cls = getattr(diffusers, sampler.scheduler_class)
    accepted = inspect.signature(cls.__init__).parameters
    dynamic = bool(family_config.get("use_dynamic_shifting"))
    mu = dynamic_mu(family_config, image_seq_len) if dynamic else None
    shift = math.exp(mu) if mu is not None else float(family_config.get("shift", 1.0))
    kwargs: dict[str, Any] = dict(sampler.kwargs)
    if label in _SPACING:
        kwargs[_SPACING[label]] = True
    timestep_kwargs: dict[str, Any] = {}
    if "flow_shift" in accepted:  # multistep solvers: the shift is static per run
        kwargs["flow_shift"] = shift
    elif dynamic and "use_dynamic_shifting" in accepted:  # FlowMatch schedulers: as Flux's own pipeline
        kwargs.update({k: v for k, v in family_config.items() if k in accepted})
        timestep_kwargs = {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}
    else:
        kwargs["shift"] = shift
    kwargs["num_train_timesteps"] = family_config.get("num_train_timesteps", 1000)
    scheduler = cls(**{k: v for k, v in kwargs.items() if k in accepted})
    return FlowSchedule(scheduler, timestep_kwargs)
