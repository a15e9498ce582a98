"""Noise schedules in sigma space, for the samplers Sfumato runs itself (`k_samplers`).

A diffusion model trained on T timesteps (SD: 1000, scaled-linear betas) has one noise level per
timestep, sigma_t = sqrt((1 - alphā_t) / alphā_t): `ModelSigmas` holds that table and converts between
sigma and (fractional) timestep by linear interpolation of log sigma, as k-diffusion does. A schedule of
N steps is N + 1 decreasing sigmas, the last one 0 (a clean image), except where noted:

    Uniform, Normal  timesteps evenly spaced from the last (T - 1) to the first (0):
                     sigma(linspace(T - 1, 0, N)), then 0. (A1111 lists both names; here they are one
                     formula: "Normal" spaces t between t(sigma_max) and t(sigma_min), which are T-1 and 0.)
    SGM Uniform      linspace(T - 1, 0, N + 1) with the last point dropped, then 0.
    Simple           every (T / N)-th training sigma from the top: sigma[T - 1 - floor(k T / N)], then 0.
    DDIM             the training timesteps 1 + k * (T // N), from the top, then 0.
    Karras           (Karras et al. 2022, eq. 5) (smax^(1/rho) + k/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho,
                     rho = 7, then 0.
    Exponential      exp(linspace(log smax, log smin, N)), then 0.
    Polyexponential  exp(log smin + (1 - k/(N-1))^rho (log smax - log smin)), rho = 1 (A1111's), then 0;
                     with rho 1 it equals Exponential.
    KL Optimal       tan((1 - k/(N-1)) atan(smax) + k/(N-1) atan(smin)), then 0 (Sabour et al. 2024).
    Align Your Steps NVIDIA's published 10-step sigmas for SD1.5 and SDXL; other step counts are
                     interpolated linearly in log sigma over an even grid (as NVIDIA's notes publish), then 0.
    Beta             smin + (smax - smin) * Beta(0.6, 0.6).ppf(1 - k/(N-1)), then 0 (A1111's defaults).

smin and smax are the model's first and last training sigmas (SD: 0.0292 and 14.6146).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

# NVIDIA's "Align Your Steps" 10-step schedules (published with the paper, Sabour et al. 2024).
AYS_SD15: Final = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL: Final = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)
KARRAS_RHO: Final = 7.0
POLYEXPONENTIAL_RHO: Final = 1.0
BETA_ALPHA: Final = 0.6
BETA_BETA: Final = 0.6


@dataclass(frozen=True)
class ModelSigmas:
    """The training noise levels of a model (ascending: timestep 0 first)."""

    sigmas: torch.Tensor  # float64, (T,)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSigmas:
        """From a diffusers scheduler config: linear and scaled-linear betas in float64 here, any other
        beta schedule (or trained betas) as diffusers computes it."""
        steps = int(config.get("num_train_timesteps", 1000))
        b0, b1 = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
        kind = config.get("beta_schedule", "linear")
        if config.get("trained_betas") is None and kind in ("linear", "scaled_linear"):
            if kind == "linear":
                betas = torch.linspace(b0, b1, steps, dtype=torch.float64)
            else:
                betas = torch.linspace(b0**0.5, b1**0.5, steps, dtype=torch.float64) ** 2
            return cls.from_alphas_cumprod(torch.cumprod(1 - betas, 0))
        import diffusers

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        ddpm = diffusers.DDPMScheduler.from_config(  # type: ignore[no-untyped-call]
            {k: v for k, v in config.items() if k in keys}
        )
        return cls.from_alphas_cumprod(ddpm.alphas_cumprod)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> ModelSigmas:
        ac = alphas_cumprod.to(torch.float64)
        return cls(((1 - ac) / ac).sqrt())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def last_t(self) -> int:
        return len(self.sigmas) - 1

    def t(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The fractional timestep of each sigma (log-linear interpolation, clamped to the table)."""
        s = torch.as_tensor(sigma, dtype=torch.float64).clamp(self.sigma_min, self.sigma_max)
        log_table = self.sigmas.log().numpy()
        steps = np.arange(len(log_table), dtype=np.float64)
        return torch.from_numpy(np.interp(s.log().numpy(), log_table, steps))

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """The sigma of each fractional timestep."""
        tt = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.last_t)
        low = tt.floor().long()
        high = (low + 1).clamp(max=self.last_t)
        w = tt - low
        log_sigmas = self.sigmas.log()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def _zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)])


def _ramp(n: int) -> torch.Tensor:
    """k / (n - 1) for k = 0..n-1 (0 alone for one step)."""
    return torch.linspace(0, 1, n, dtype=torch.float64)


def uniform(n: int, m: ModelSigmas) -> torch.Tensor:
    return _zero(m.sigma(torch.linspace(m.last_t, 0, n, dtype=torch.float64)))


def sgm_uniform(n: int, m: ModelSigmas) -> torch.Tensor:
    return _zero(m.sigma(torch.linspace(m.last_t, 0, n + 1, dtype=torch.float64)[:-1]))


def simple(n: int, m: ModelSigmas) -> torch.Tensor:
    size = len(m.sigmas)
    return _zero(torch.stack([m.sigmas[size - 1 - math.floor(k * size / n)] for k in range(n)]))


def ddim(n: int, m: ModelSigmas) -> torch.Tensor:
    stride = max(len(m.sigmas) // n, 1)
    ts = list(range(1, len(m.sigmas), stride))[:n]
    return _zero(m.sigmas[ts].flip(0))


def karras(n: int, m: ModelSigmas, rho: float = KARRAS_RHO) -> torch.Tensor:
    lo, hi = m.sigma_min ** (1 / rho), m.sigma_max ** (1 / rho)
    return _zero((hi + _ramp(n) * (lo - hi)) ** rho)


def exponential(n: int, m: ModelSigmas) -> torch.Tensor:
    return _zero(torch.linspace(math.log(m.sigma_max), math.log(m.sigma_min), n, dtype=torch.float64).exp())


def polyexponential(n: int, m: ModelSigmas, rho: float = POLYEXPONENTIAL_RHO) -> torch.Tensor:
    lo, hi = math.log(m.sigma_min), math.log(m.sigma_max)
    return _zero((lo + (1 - _ramp(n)) ** rho * (hi - lo)).exp())


def kl_optimal(n: int, m: ModelSigmas) -> torch.Tensor:
    r = _ramp(n)
    return _zero(((1 - r) * math.atan(m.sigma_max) + r * math.atan(m.sigma_min)).tan())


def loglinear_interp(table: tuple[float, ...], n: int) -> torch.Tensor:
    """`table` (decreasing) resampled to n points, linearly in log sigma over an even grid."""
    if n == len(table):
        return torch.tensor(table, dtype=torch.float64)
    logs = np.log(np.asarray(table[::-1], dtype=np.float64))
    out = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), logs)
    return torch.from_numpy(np.exp(out)[::-1].copy())


def align_your_steps(n: int, m: ModelSigmas, table: tuple[float, ...] = AYS_SD15) -> torch.Tensor:
    return _zero(loglinear_interp(table, n))


def beta(n: int, m: ModelSigmas, alpha: float = BETA_ALPHA, b: float = BETA_BETA) -> torch.Tensor:
    from scipy import stats

    ppf = torch.from_numpy(np.asarray(stats.beta.ppf(1 - _ramp(n).numpy(), alpha, b), dtype=np.float64))
    return _zero(m.sigma_min + ppf * (m.sigma_max - m.sigma_min))


Schedule = Callable[[int, ModelSigmas], torch.Tensor]

# schedule label (samplers.SCHEDULE_TYPES) -> function; Align Your Steps picks its table by model group.
SCHEDULES: Final[Mapping[str, Schedule]] = {
    "Uniform": uniform,
    "Normal": uniform,
    "SGM Uniform": sgm_uniform,
    "Simple": simple,
    "DDIM": ddim,
    "Karras": karras,
    "Exponential": exponential,
    "Polyexponential": polyexponential,
    "KL Optimal": kl_optimal,
    "Align Your Steps": align_your_steps,
    "Beta": beta,
}


def schedule_sigmas(label: str, n: int, m: ModelSigmas, *, model_group: str | None = None) -> torch.Tensor:
    """The N + 1 sigmas (float64, the last 0) of schedule `label` for `n` steps."""
    if n < 1:
        raise ValueError(f"steps must be at least 1, got {n}")
    if label == "Align Your Steps":
        sdxl = model_group is not None and model_group.startswith("sdxl")
        return align_your_steps(n, m, AYS_SDXL if sdxl else AYS_SD15)
    return SCHEDULES[label](n, m)
