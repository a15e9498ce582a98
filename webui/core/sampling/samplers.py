"""A1111 sampler names and schedule types, as plain data, mapped onto diffusers schedulers.

A request names a sampler ("DPM++ 2M") and a schedule type ("Karras"); older infotext and API clients
send one combined name ("DPM++ 2M Karras") or a k-diffusion alias ("k_dpmpp_2m_ka"). `resolve` turns
any of these into a `SamplerInfo` and a schedule label; `make_scheduler` builds a fresh diffusers
scheduler for one run from the model's own scheduler config (training betas and prediction type come
from there; the timestep spacing and sigma schedule come from the schedule type).

Schedule types, and what each becomes in diffusers (A1111's k-diffusion schedules for comparison):

    Uniform      timestep_spacing="linspace": N timesteps from 999 to 0, then sigma 0 (A1111's
                 `uniform`/`normal`). Only the single-step k-diffusion ports (Euler, Heun, LMS, DPM2...)
                 space timesteps this way; the multistep solvers' "linspace" is N+1 points with the last
                 dropped, which is SGM Uniform, so they do not offer Uniform.
    Karras       use_karras_sigmas (rho 7) over the model's full sigma range. timestep_spacing is set to
                 "linspace" with it: the k-diffusion ports take sigma_min/sigma_max from the *spaced*
                 timesteps, and with the SD configs' "leading" spacing Karras would start at sigma(901)
                 ~ 8.4 instead of sigma(999) ~ 14.6.
    Exponential  use_exponential_sigmas, full range (same reason for "linspace").
    Beta         use_beta_sigmas (alpha = beta = 0.6, A1111's defaults), full range.
    SGM Uniform  timestep_spacing="trailing": 999, 999 - 1000/N, ... (A1111's sgm_uniform is
                 linspace(999, 0, N + 1)[:-1] unrounded; trailing is the same to within one timestep).
    DDIM         timestep_spacing="leading", steps_offset=1: 1 + k * (1000 // N), exactly A1111's `ddim`
                 schedule and the original DDIM/PLMS timesteps; also what SD's shipped configs produce.
    Automatic    the sampler's default; for LCM (whose timesteps are part of the algorithm) it is the
                 scheduler's own and the only choice.

Every schedule entry sets all of a scheduler's sigma flags explicitly, so a base config that arrives with,
say, use_karras_sigmas=True cannot leak into a "Uniform" run. Call `set_timesteps` below rather than the
scheduler's own (it pins the first step; see there).

Our own samplers (`SamplerInfo.own`, run by k_scheduler.KScheduler over sigma_schedules): where diffusers
has no such sampler (DPM++ 2M SDE Heun, DPM++ 3M SDE, ancestral DPM++ 2S a, DPM fast, Restart, DDIM
CFG++) and where it cannot build the schedule type (Polyexponential, KL Optimal, Align Your Steps, Simple,
Normal; Karras/Exponential/Beta for Euler a; Uniform/DDIM for DPM++ 2M and 2M SDE). Their step noise
comes from the images' generators ("generator"), not a Brownian tree. DPM adaptive is not offered.

Where diffusers differs from A1111: DDIM and PLMS have no Karras/Exponential/Beta (no such flags in
diffusers); DPM2 and DPM2 a lack A1111's "discard next-to-last sigma"; UniPC (bh1, as A1111) ends at
sigma_min, not 0.

Noise for stochastic samplers (`SamplerInfo.step_noise`):

    "none"       deterministic step (Euler, DDIM at eta 0, the DPM++ ODE solvers...).
    "generator"  step() draws noise with `randn_tensor(..., generator=...)`; pass
                 `generator=[one CPU torch.Generator per image]` (see `noise.NoiseSource`), which draws
                 each image's noise from its own generator on the CPU, whatever the device.
    "brownian"   DPM++ SDE (DPMSolverSDEScheduler) draws from a torchsde Brownian tree created on its first
                 step() and seeded by the `noise_sampler_seed` config value. `make_scheduler` requires
                 `noise_seeds` (one per image, the images' seeds, as A1111 does) and passes the list:
                 diffusers then builds one tree per image, so batch position does not change an image.
                 Without a seed diffusers would draw one from torch's global RNG. The tree lives on the
                 sample's device and dtype, so DPM++ SDE results differ between CPU and GPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

if TYPE_CHECKING:
    import torch

StepNoise = Literal["none", "generator", "brownian"]
_V = TypeVar("_V")


class UnknownSampler(ValueError):
    """An unknown sampler name, or a schedule type the sampler does not support.

    `field` is the request field at fault: "sampler_name" or "scheduler".
    """

    def __init__(self, message: str, field: str = "sampler_name") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ScheduleType:
    """One entry of A1111's /sdapi/v1/schedulers."""

    name: str  # A1111's id: "karras"
    label: str  # display name: "Karras"
    aliases: tuple[str, ...] = ()
    default_rho: float | None = None
    need_inner_model: bool = False


AUTOMATIC: Final = "Automatic"

# A1111's order. Karras Exponential is not here: A1111 has no such type either (only the old combined names).
SCHEDULE_TYPES: Final[tuple[ScheduleType, ...]] = (
    ScheduleType("automatic", AUTOMATIC),
    ScheduleType("uniform", "Uniform", need_inner_model=True),
    ScheduleType("karras", "Karras", default_rho=7.0),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("polyexponential", "Polyexponential", default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    ScheduleType("kl_optimal", "KL Optimal"),
    ScheduleType("align_your_steps", "Align Your Steps"),
    ScheduleType("simple", "Simple", need_inner_model=True),
    ScheduleType("normal", "Normal", need_inner_model=True),
    ScheduleType("ddim", "DDIM", need_inner_model=True),
    ScheduleType("beta", "Beta", need_inner_model=True),
)


@dataclass(frozen=True)
class OwnSampler:
    """A sampler of `k_samplers` and how A1111 runs it."""

    algorithm: str  # the function's name in webui.core.sampling.k_samplers
    default_eta: float = 0.0  # when a request leaves eta out (A1111: 1 for ancestral/SDE samplers)
    discard_next_to_last: bool = False  # A1111's discard_next_to_last_sigma
    needs_uncond: bool = False  # the step needs the unguided prediction (CFG++)
    fixed_schedule: bool = False  # runs its own spacing whatever the schedule (DPM fast/adaptive)
    adaptive: bool = False  # decides its model calls as it runs: the request's steps are not used


@dataclass(frozen=True)
class SamplerInfo:
    name: str  # A1111's name: "DPM++ 2M"
    aliases: tuple[str, ...]  # A1111's aliases: ("k_dpmpp_2m",)
    scheduler_class: str  # diffusers class name
    kwargs: Mapping[str, Any] = field(hash=False)  # constructor kwargs that make it this sampler
    schedule_kwargs: Mapping[str, Mapping[str, Any]] = field(hash=False)  # label -> kwargs, in UI order
    default_schedule: str
    step_noise: StepNoise = "none"
    second_order: bool = False  # two model evaluations per step (timesteps has 2N - 1 entries)
    own: OwnSampler | None = None  # our sigma-space implementation, for the schedules diffusers lacks
    own_schedules: tuple[str, ...] = ()  # the schedule labels `own` runs (the rest: scheduler_class)

    @property
    def schedules(self) -> tuple[str, ...]:
        """Every schedule label this sampler runs, in A1111's order (the default first if Automatic)."""
        have = set(self.schedule_kwargs) | set(self.own_schedules)
        ordered = tuple(s.label for s in SCHEDULE_TYPES if s.label in have)
        return tuple(self.schedule_kwargs) + tuple(s for s in ordered if s not in self.schedule_kwargs)

    def runs_own(self, label: str) -> bool:
        """Whether schedule `label` runs on our sigma-space implementation (k_scheduler.KScheduler)."""
        return label in self.own_schedules

    @property
    def options(self) -> dict[str, str]:
        """A1111's /sdapi/v1/samplers `options`, describing this implementation."""
        opts: dict[str, str] = {}
        if self.default_schedule not in ("Uniform", AUTOMATIC):
            opts["scheduler"] = _schedule_type(self.default_schedule).name
        if self.second_order:
            opts["second_order"] = "True"
        if self.step_noise == "generator":
            opts["uses_ensd"] = "True"
        if self.step_noise == "brownian":
            opts["brownian_noise"] = "True"
        return opts


# -- schedule kwargs per scheduler family ---------------------------------------------------------------

_SIGMA_FLAGS: Final = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_FLAG_OF: Final = {
    "Karras": "use_karras_sigmas",
    "Exponential": "use_exponential_sigmas",
    "Beta": "use_beta_sigmas",
}
_SPACING: Final[Mapping[str, Mapping[str, Any]]] = {
    "Uniform": {"timestep_spacing": "linspace"},
    "Karras": {"timestep_spacing": "linspace"},
    "Exponential": {"timestep_spacing": "linspace"},
    "Beta": {"timestep_spacing": "linspace"},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "DDIM": {"timestep_spacing": "leading", "steps_offset": 1},
}


def _table(labels: Sequence[str], *, sigma_flags: bool, spacing: bool) -> Mapping[str, Mapping[str, Any]]:
    """Constructor kwargs for each schedule label, for a class with/without sigma flags and spacing."""
    out: dict[str, Mapping[str, Any]] = {}
    for label in labels:
        kw: dict[str, Any] = {}
        if sigma_flags:
            kw.update({flag: _FLAG_OF.get(label) == flag for flag in _SIGMA_FLAGS})
        if spacing:
            kw.update(_SPACING[label])
        out[label] = MappingProxyType(kw)
    return MappingProxyType(out)


# Euler, Heun, LMS, DPM2, DPM2 a, DPM++ SDE: ports of k-diffusion's samplers, the full set.
_K_DISCRETE: Final = _table(
    ("Uniform", "Karras", "Exponential", "SGM Uniform", "DDIM", "Beta"), sigma_flags=True, spacing=True
)
# DPM++ 2M (SDE), UniPC, DEIS: spacing "linspace"/"leading" mean other things here (see module doc).
_MULTISTEP: Final = _table(("Karras", "Exponential", "SGM Uniform", "Beta"), sigma_flags=True, spacing=True)
# DPM++ 2S a: no timestep_spacing; its own spacing is linspace(0, 999, N + 1) rounded, last dropped,
# i.e. SGM Uniform, so that entry sets no spacing.
_SINGLESTEP: Final = _table(("Karras", "Exponential", "SGM Uniform", "Beta"), sigma_flags=True, spacing=False)
# Euler a: no sigma flags in diffusers, so no Karras/Exponential/Beta.
_SPACING_ONLY: Final = _table(("Uniform", "SGM Uniform", "DDIM"), sigma_flags=False, spacing=True)
# DDIM, PLMS: the same, DDIM spacing first (their own default).
_TIMESTEPS: Final = _table(("DDIM", "Uniform", "SGM Uniform"), sigma_flags=False, spacing=True)
# LCM: the timesteps are the algorithm's (skipping over original_inference_steps).
_NATIVE: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType({AUTOMATIC: MappingProxyType({})})


# Config keys that describe how the model was trained; a scheduler that cannot take one must not run it.
_TRAINING_KEYS: Final = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
)


def _info(
    name: str,
    aliases: tuple[str, ...],
    cls: str,
    kwargs: Mapping[str, Any],
    schedules: Mapping[str, Mapping[str, Any]],
    default: str,
    *,
    step_noise: StepNoise = "none",
    second_order: bool = False,
    own: OwnSampler | None = None,
    own_schedules: tuple[str, ...] = (),
) -> SamplerInfo:
    return SamplerInfo(
        name,
        aliases,
        cls,
        MappingProxyType(dict(kwargs)),
        schedules,
        default,
        step_noise,
        second_order,
        own,
        own_schedules,
    )


_NO_KWARGS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
# The schedules our sigma-space samplers run (sigma_schedules): every A1111 type but Automatic.
_SIGMA: Final = ("Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                 "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")  # fmt: skip
# What diffusers cannot build for the k-diffusion ports it has: these run on our implementation.
_NEW: Final = ("Polyexponential", "KL Optimal", "Align Your Steps", "Simple", "Normal")
_OWN: Final = "KScheduler"  # scheduler_class of a sampler that only runs on our implementation


_DPMPP: Final = {"solver_order": 2, "solver_type": "midpoint", "lower_order_final": True}

SAMPLERS: Final[tuple[SamplerInfo, ...]] = (
    _info("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
          {**_DPMPP, "algorithm_type": "dpmsolver++"}, _MULTISTEP, "Karras",
          own=OwnSampler("dpmpp_2m"), own_schedules=("Uniform", "DDIM", *_NEW)),
    _info("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", {}, _K_DISCRETE, "Karras",
          step_noise="brownian", second_order=True),
    _info("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
          {**_DPMPP, "algorithm_type": "sde-dpmsolver++"}, _MULTISTEP, "Exponential", step_noise="generator",
          own=OwnSampler("dpmpp_2m_sde", default_eta=1.0), own_schedules=("Uniform", "DDIM", *_NEW)),
    _info("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), _OWN, {}, _NO_KWARGS, "Exponential",
          step_noise="generator", own=OwnSampler("dpmpp_2m_sde_heun", default_eta=1.0), own_schedules=_SIGMA),
    _info("DPM++ 2S a", ("k_dpmpp_2s_a",), _OWN, {}, _NO_KWARGS, "Karras", step_noise="generator",
          second_order=True, own=OwnSampler("dpmpp_2s_ancestral", default_eta=1.0), own_schedules=_SIGMA),
    _info("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), _OWN, {}, _NO_KWARGS, "Exponential", step_noise="generator",
          own=OwnSampler("dpmpp_3m_sde", default_eta=1.0, discard_next_to_last=True), own_schedules=_SIGMA),
    _info("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", {},
          _SPACING_ONLY, "Uniform", step_noise="generator",
          own=OwnSampler("euler_ancestral", default_eta=1.0),
          own_schedules=("Karras", "Exponential", "Beta", *_NEW)),
    _info("Euler", ("k_euler",), "EulerDiscreteScheduler", {}, _K_DISCRETE, "Uniform",
          own=OwnSampler("euler"), own_schedules=_NEW),
    _info("LMS", ("k_lms",), "LMSDiscreteScheduler", {}, _K_DISCRETE, "Uniform"),
    _info("Heun", ("k_heun",), "HeunDiscreteScheduler", {}, _K_DISCRETE, "Uniform", second_order=True,
          own=OwnSampler("heun"), own_schedules=_NEW),
    _info("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", {}, _K_DISCRETE, "Karras", second_order=True),
    _info("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", {}, _K_DISCRETE, "Karras",
          step_noise="generator", second_order=True),
    # DPM fast runs its own spacing (uniform in log sigma over the model's range): no schedule choice.
    _info("DPM fast", ("k_dpm_fast",), _OWN, {}, _NO_KWARGS, AUTOMATIC, step_noise="generator",
          own=OwnSampler("dpm_fast", default_eta=1.0, fixed_schedule=True), own_schedules=(AUTOMATIC,)),
    # DPM adaptive: DPM-Solver-2/3 with error control from the model's sigma_max to sigma_min; the
    # number of model calls is its own (the steps setting is ignored, as in A1111). txt2img only.
    _info("DPM adaptive", ("k_dpm_ad",), _OWN, {}, _NO_KWARGS, AUTOMATIC, step_noise="generator",
          own=OwnSampler("dpm_adaptive", default_eta=1.0, fixed_schedule=True, adaptive=True),
          own_schedules=(AUTOMATIC,)),
    _info("Restart", ("restart",), _OWN, {}, _NO_KWARGS, "Karras", step_noise="generator", second_order=True,
          own=OwnSampler("restart"), own_schedules=_SIGMA),
    _info("DEIS", ("deis",), "DEISMultistepScheduler",
          {"solver_order": 2, "algorithm_type": "deis", "solver_type": "logrho", "lower_order_final": True},
          _MULTISTEP, "SGM Uniform"),
    # clip_sample/set_alpha_to_one: diffusers' DDIM defaults are True, which an SD1 (PNDM) or SDXL (Euler)
    # config does not override; SD needs both False (as the original DDIM sampler).
    _info("DDIM", ("ddim",), "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False},
          _TIMESTEPS, "DDIM"),
    # CFG++ (Chung et al. 2024): DDIM that renoises along the unconditional prediction; A1111 divides
    # the CFG scale by 12.5, so CFG 12.5 is CFG++'s 1. A1111's default eta for it is eta_ddim's, 0.
    _info("DDIM CFG++", ("ddim_cfgpp",), _OWN, {}, _NO_KWARGS, "DDIM",
          own=OwnSampler("ddim_cfgpp", needs_uncond=True), own_schedules=_SIGMA),
    _info("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False},
          _TIMESTEPS, "DDIM"),
    # A1111's UniPC options: variant bh1, order 3, lower order final; time-uniform skip ~ SGM Uniform.
    # bh1 divides by h, infinite on a final step to sigma 0 (NaN with diffusers' default
    # final_sigmas_type "zero"); A1111's UniPC also stops at the first training timestep (sigma_min).
    _info("UniPC", ("unipc",), "UniPCMultistepScheduler",
          {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "predict_x0": True,
           "final_sigmas_type": "sigma_min"},
          _MULTISTEP, "SGM Uniform"),
    _info("LCM", ("k_lcm",), "LCMScheduler", {}, _NATIVE, AUTOMATIC, step_noise="generator"),
)  # fmt: skip

# Aliases of A1111's pre-1.9 combined samplers: alias -> (sampler, schedule label).
LEGACY_ALIASES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "k_lms_ka": ("LMS", "Karras"),
        "k_dpm_2_ka": ("DPM2", "Karras"),
        "k_dpm_2_a_ka": ("DPM2 a", "Karras"),
        "k_dpmpp_2s_a_ka": ("DPM++ 2S a", "Karras"),
        "k_dpmpp_2m_ka": ("DPM++ 2M", "Karras"),
        "k_dpmpp_sde_ka": ("DPM++ SDE", "Karras"),
        "k_dpmpp_2m_sde_ka": ("DPM++ 2M SDE", "Karras"),
        "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", "Exponential"),
        "k_dpmpp_2m_sde_heun_ka": ("DPM++ 2M SDE Heun", "Karras"),
        "k_dpmpp_2m_sde_heun_exp": ("DPM++ 2M SDE Heun", "Exponential"),
        "k_dpmpp_3m_sde_ka": ("DPM++ 3M SDE", "Karras"),
        "k_dpmpp_3m_sde_exp": ("DPM++ 3M SDE", "Exponential"),
    }
)


# -- look-ups ------------------------------------------------------------------------------------------


# Samplers that decide their own model calls (txt2img only: no fixed steps to start img2img part-way)
ADAPTIVE: Final = frozenset(i.name for i in SAMPLERS if i.own is not None and i.own.adaptive)


def _schedule_type(label: str) -> ScheduleType:
    return next(s for s in SCHEDULE_TYPES if s.label == label)


def _find(table: Mapping[str, _V], key: str) -> _V | None:
    """Exact key first, then case-insensitive."""
    if key in table:
        return table[key]
    folded = {k.casefold(): v for k, v in table.items()}
    return folded.get(key.casefold())


def _sampler_keys() -> dict[str, tuple[SamplerInfo, str | None]]:
    """Every accepted sampler spelling -> (sampler, schedule implied by the spelling or None)."""
    by_name = {s.name: s for s in SAMPLERS}
    keys: dict[str, tuple[SamplerInfo, str | None]] = {}
    for s in SAMPLERS:
        keys[s.name] = (s, None)
        keys.update({a: (s, None) for a in s.aliases})
    keys.update({a: (by_name[n], label) for a, (n, label) in LEGACY_ALIASES.items()})
    return keys


def _schedule_keys() -> dict[str, str]:
    """Every accepted schedule spelling (label, id, alias) -> label."""
    keys: dict[str, str] = {}
    for s in SCHEDULE_TYPES:
        keys.update({k: s.label for k in (s.label, s.name, *s.aliases)})
    return keys


def _split_combined(name: str) -> tuple[SamplerInfo, str] | None:
    """A legacy combined name, "<sampler> <schedule>" (e.g. "DPM++ 2M SDE Exponential")."""
    samplers = _sampler_keys()
    for spelling, label in _schedule_keys().items():
        for folded in (False, True):
            n, suffix = (name.casefold(), spelling.casefold()) if folded else (name, spelling)
            if n.endswith(" " + suffix):
                found = _find(samplers, name[: -len(suffix) - 1])
                if found is not None and found[1] is None:
                    return found[0], label
    return None


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def resolve(sampler_name: str, scheduler: str | None = None) -> tuple[SamplerInfo, str]:
    """(sampler, schedule label) for a sampler name/alias/combined name and an optional schedule type.

    `scheduler` None or "Automatic" means the schedule the name implies ("DPM++ 2M Karras", "k_lms_ka"),
    else the sampler's default. A combined name plus a different explicit schedule type is an error.
    """
    found = _find(_sampler_keys(), sampler_name)
    if found is None:
        found = _split_combined(sampler_name)
    if found is None:
        raise UnknownSampler(
            f"unknown sampler {sampler_name!r}: valid names are {', '.join(sampler_names())}"
        )
    info, implied = found
    if implied == AUTOMATIC and AUTOMATIC not in info.schedules:
        implied = None
    requested: str | None = None
    if scheduler is not None:
        requested = _find(_schedule_keys(), scheduler)
        if requested is None:
            raise UnknownSampler(
                f"unknown schedule type {scheduler!r}: valid for {info.name} are {', '.join(info.schedules)}",
                "scheduler",
            )
        if requested == AUTOMATIC and AUTOMATIC not in info.schedules:
            requested = None
    if implied is not None and requested is not None and requested != implied:
        raise UnknownSampler(
            f"schedule type {scheduler!r} conflicts with sampler name {sampler_name!r}, which means "
            f"{info.name} with schedule type {implied}",
            "scheduler",
        )
    label = requested or implied or info.default_schedule
    if label not in info.schedules:
        raise UnknownSampler(
            f"schedule type {label!r} is not supported by {info.name}: valid are {', '.join(info.schedules)}",
            "scheduler" if requested else "sampler_name",
        )
    return info, label


def make_scheduler(
    sampler_name: str,
    schedule: str | None,
    base_config: Mapping[str, Any],
    *,
    noise_seeds: Sequence[int] | None = None,
    model_group: str | None = None,
    eta: float | None = None,
) -> Any:
    """A fresh scheduler for one run (diffusers schedulers keep per-run state: never share one).

    `base_config` is the model's scheduler config (any scheduler class): training betas,
    num_train_timesteps, prediction_type, rescale_betas_zero_snr... carry over. `noise_seeds` (one per
    image) is required by samplers whose `step_noise` is "brownian" and ignored by the others.
    `model_group` (the family's group, "sd1", "sdxl"...) picks Align Your Steps' table; `eta` (the
    request's, None: the sampler's default) is what our samplers plan their model calls with.
    A schedule diffusers cannot build runs on our sigma-space implementation (`KScheduler`).
    """
    import diffusers

    info, label = resolve(sampler_name, schedule)
    if info.runs_own(label) or _eta_needs_own(info, eta):
        return _make_own(info, label, base_config, model_group, eta)
    kwargs: dict[str, Any] = {**info.kwargs, **info.schedule_kwargs[label]}
    if info.step_noise == "brownian":
        if not noise_seeds:
            raise ValueError(f"{info.name} needs noise_seeds (one seed per image) to seed its Brownian tree")
        kwargs["noise_sampler_seed"] = [int(s) for s in noise_seeds]
    cls = getattr(diffusers, info.scheduler_class)
    accepted = inspect.signature(cls.__init__).parameters
    for key in _TRAINING_KEYS:
        if key not in accepted and base_config.get(key) not in (None, False):
            raise ValueError(
                f"{info.name} cannot run this model: its scheduler config sets {key}={base_config[key]!r}, "
                f"which {info.scheduler_class} does not support"
            )
    # Only what this class takes: diffusers logs a warning for every other key of the base config.
    config = {k: v for k, v in base_config.items() if k in accepted}
    return cls.from_config(config, **kwargs)


def _eta_needs_own(info: SamplerInfo, eta: float | None) -> bool:
    """An eta other than the sampler's default, on a diffusers class whose step() has no eta (Euler a):
    our own implementation of the sampler runs instead, so the eta is honoured."""
    import diffusers

    if eta is None or info.own is None or eta == info.own.default_eta or info.scheduler_class == _OWN:
        return False
    return "eta" not in inspect.signature(getattr(diffusers, info.scheduler_class).step).parameters


def _make_own(
    info: SamplerInfo, label: str, base_config: Mapping[str, Any], model_group: str | None, eta: float | None
) -> Any:
    from webui.core.sampling import k_samplers
    from webui.core.sampling.k_scheduler import KScheduler

    own = info.own
    if own is None:
        raise AssertionError(f"{info.name} lists own schedules without an own implementation")
    return KScheduler(
        getattr(k_samplers, own.algorithm),
        label,
        base_config,
        eta=own.default_eta if eta is None else eta,
        discard_next_to_last=own.discard_next_to_last,
        needs_uncond=own.needs_uncond,
        fixed_schedule=own.fixed_schedule,
        adaptive=own.adaptive,
        model_group=model_group,
        name=info.name,
    )


def set_timesteps(
    scheduler: Any,
    steps: int,
    device: str | torch.device | None = None,
    *,
    begin_index: int = 0,
    **kwargs: Any,
) -> None:
    """`scheduler.set_timesteps(steps, device)`, then start at `begin_index` (0 for txt2img).

    Use this rather than set_timesteps alone. Without a begin index, diffusers finds the first step by
    looking the timestep value up, and when that value occurs twice it takes the second occurrence
    (an img2img convention). The integer timesteps of DPM++ 2M/2M SDE/2S a, UniPC and DEIS repeat at
    the start with the Beta schedule from about 50 steps, so the run would end in an IndexError or
    AssertionError one step early. img2img passes the index of its first step (t_start * order).
    `kwargs` go to set_timesteps as they are (a flow schedule's `sigmas` and `mu`).
    """
    scheduler.set_timesteps(steps, device=device, **kwargs)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin_index)


def list_samplers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/samplers: [{name, aliases, options}]."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": s.options} for s in SAMPLERS]


def list_schedulers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/schedulers: [{name, label, aliases, default_rho, need_inner_model}]."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) if s.aliases else None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULE_TYPES
    ]
