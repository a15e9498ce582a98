"""Samplers in sigma space (the k-diffusion family), written from their published update rules.

The state is x = x0 + sigma * noise (the "VE" form of a diffusion model's latents; the model sees
x / sqrt(sigma^2 + 1)), and the model gives `denoised`, its estimate of x0. Every sampler is a Python
generator with one signature:

    def sampler(x, sigmas, ctx) -> Generator[(x_to_evaluate, sigma), Eval, final_x]

It yields each point where it needs the model and receives an `Eval`: the sample the model actually saw
(a hook may have changed it; the sampler continues from it), the guided `denoised` and, for CFG++, the
unguided one. `sigmas` is the schedule, decreasing, usually ending in 0. `KScheduler`
(webui.core.sampling.k_scheduler) drives these one model call at a time from the denoising loop.

Notation: t = -log(sigma) (the half log-SNR, lambda), h = t_next - t, d = (x - denoised) / sigma.

Sources: Euler, Heun: Karras et al. 2022 (Alg. 1, 2). Ancestral step (sigma_up, sigma_down): Ho et al./
Karras. DPM-Solver-1/2/3, DPM-Solver-fast and the adaptive
step size solver: Lu et al. 2022 (Alg. 1, 2, the fast step plan and section 4.2).
DPM-Solver++(2S), (2M): Lu et al. 2022b. SDE-DPM-Solver++(2M) and the 3M variant: the same paper's SDE
solvers (data prediction, eta scaling the noise). Restart: Xu et al. 2023. CFG++: Chung et al. 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final

import torch

from webui.core.sampling import sigma_schedules as sched


@dataclass(frozen=True)
class Eval:
    x: torch.Tensor  # the sample the model saw
    denoised: torch.Tensor  # guided estimate of x0
    uncond: torch.Tensor | None = None  # unguided estimate of x0 (CFG++ only)


@dataclass(frozen=True)
class Context:
    noise: Callable[[torch.Tensor], torch.Tensor]  # standard normal noise shaped like its argument
    eta: float = 1.0  # ancestral/SDE noise amount
    s_noise: float = 1.0  # multiplier of the added noise


Request = tuple[torch.Tensor, float]
Run = Generator[Request, Eval, torch.Tensor]
Sampler = Callable[[torch.Tensor, list[float], Context], Run]

CFGPP_SCALE: Final = 12.5  # A1111 maps CFG 0..12.5 onto CFG++'s 0..1


def ancestral(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically to sigma_down, then add sigma_up noise."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _d(e: Eval, sigma: float) -> torch.Tensor:
    return (e.x - e.denoised) / sigma


def euler(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        x = e.x + _d(e, s) * (sn - s)
    return x


def euler_ancestral(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        down, up = ancestral(s, sn, ctx.eta)
        x = e.x + _d(e, s) * (down - s)
        if up > 0:
            x = x + ctx.noise(x) * ctx.s_noise * up
    return x


def heun(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        d = _d(e, s)
        x = e.x + d * (sn - s)
        if sn > 0:  # the trapezoid rule, except on the last step to sigma 0 (Euler there)
            e2 = yield x, sn
            x = e.x + (d + _d(e2, sn)) / 2 * (sn - s)
    return x


def dpmpp_2m(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """DPM-Solver++(2M): x' = (sn/s) x - expm1(-h) D, D = (1 + 1/2r) den - 1/2r den_prev, r = h_prev/h."""
    old: torch.Tensor | None = None
    h_last = 0.0
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        if sn == 0:
            x = e.denoised
            break
        h = math.log(s / sn)
        big_d = e.denoised
        if old is not None:
            r = h_last / h
            big_d = (1 + 1 / (2 * r)) * e.denoised - (1 / (2 * r)) * old
        x = (sn / s) * e.x - math.expm1(-h) * big_d
        old, h_last = e.denoised, h
    return x


def _dpmpp_2m_sde(heun_corrector: bool) -> Sampler:
    def run(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
        """SDE-DPM-Solver++(2M): x' = (sn/s) e^(-eta h) x + (1 - e^(-(1+eta) h)) den + correction
        + sn sqrt(1 - e^(-2 eta h)) z; correction = c (den - den_prev) / r with
        c = (1 - e^(-(1+eta) h)) / 2 (midpoint) or (e^(-(1+eta) h) - 1) / ((1+eta) h) + 1 (Heun)."""
        old: torch.Tensor | None = None
        h_last = 0.0
        for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
            e = yield x, s
            if sn == 0:
                x = e.denoised
                break
            h = math.log(s / sn)
            eta_h = ctx.eta * h
            x = (sn / s) * math.exp(-eta_h) * e.x - math.expm1(-h - eta_h) * e.denoised
            if old is not None:
                r = h_last / h
                if heun_corrector:
                    c = math.expm1(-h - eta_h) / (h + eta_h) + 1
                else:
                    c = -math.expm1(-h - eta_h) / 2
                x = x + c * (e.denoised - old) / r
            if ctx.eta > 0:
                x = x + ctx.noise(x) * sn * math.sqrt(-math.expm1(-2 * eta_h)) * ctx.s_noise
            old, h_last = e.denoised, h
        return x

    return run


dpmpp_2m_sde = _dpmpp_2m_sde(heun_corrector=False)
dpmpp_2m_sde_heun = _dpmpp_2m_sde(heun_corrector=True)


def dpmpp_3m_sde(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """SDE-DPM-Solver++(3M): the first-order exponential step with h' = (1 + eta) h, plus
    phi2(h') D1 - phi3(h') D2 from the last three denoised values (divided differences over r0 =
    h_1/h, r1 = h_2/h), phi2(z) = (e^-z - 1)/z + 1, phi3(z) = phi2(z)/z - 1/2; noise as in 2M SDE."""
    dens: list[torch.Tensor] = []  # previous denoised values, newest first
    hs: list[float] = []  # previous step sizes, newest first
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        if sn == 0:
            x = e.denoised
            break
        h = math.log(s / sn)
        h_eta = h * (ctx.eta + 1)
        x = math.exp(-h_eta) * e.x - math.expm1(-h_eta) * e.denoised
        phi2 = math.expm1(-h_eta) / h_eta + 1
        if len(dens) >= 2:
            r0, r1 = hs[0] / h, hs[1] / h
            d1_0 = (e.denoised - dens[0]) / r0
            d1_1 = (dens[0] - dens[1]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi2 * d1 - (phi2 / h_eta - 0.5) * d2
        elif dens:
            x = x + phi2 * (e.denoised - dens[0]) / (hs[0] / h)
        if ctx.eta > 0:
            x = x + ctx.noise(x) * sn * math.sqrt(-math.expm1(-2 * h * ctx.eta)) * ctx.s_noise
        dens, hs = [e.denoised, *dens[:1]], [h, *hs[:1]]
    return x


def dpmpp_2s_ancestral(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """DPM-Solver++(2S) to sigma_down (midpoint r = 1/2 in t), then sigma_up of fresh noise."""
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        down, up = ancestral(s, sn, ctx.eta)
        if down == 0:
            x = e.x + _d(e, s) * (down - s)
        else:
            h = math.log(s / down)
            s_mid = s * math.exp(-h / 2)
            x_mid = (s_mid / s) * e.x - math.expm1(-h / 2) * e.denoised
            e2 = yield x_mid, s_mid
            x = (down / s) * e.x - math.expm1(-h) * e2.denoised
        if up > 0:
            x = x + ctx.noise(x) * ctx.s_noise * up
    return x


# -- DPM-Solver (noise prediction) and DPM-Solver-fast ------------------------------------------------


def _sig(t: float) -> float:
    return math.exp(-t)


def _dpm_solver_step(x: torch.Tensor, t: float, t_next: float, order: int) -> Run:
    """One DPM-Solver-`order` step from t to t_next (Lu et al. 2022, Alg. 1 and 2, alpha = 1)."""
    h = t_next - t
    e0 = yield x, _sig(t)
    x = e0.x
    eps0 = _d(e0, _sig(t))
    if order == 1:
        return x - _sig(t_next) * math.expm1(h) * eps0
    if order == 2:
        s1 = t + h / 2
        u1 = x - _sig(s1) * math.expm1(h / 2) * eps0
        e1 = yield u1, _sig(s1)
        eps1 = _d(e1, _sig(s1))
        return x - _sig(t_next) * math.expm1(h) * eps0 - _sig(t_next) * math.expm1(h) * (eps1 - eps0)
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - _sig(s1) * math.expm1(r1 * h) * eps0
    e1 = yield u1, _sig(s1)
    big_d1 = _d(e1, _sig(s1)) - eps0
    u2 = (
        x
        - _sig(s2) * math.expm1(r2 * h) * eps0
        - _sig(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * big_d1
    )
    e2 = yield u2, _sig(s2)
    big_d2 = _d(e2, _sig(s2)) - eps0
    return x - _sig(t_next) * math.expm1(h) * eps0 - _sig(t_next) / r2 * (math.expm1(h) / h - 1) * big_d2


def fast_orders(nfe: int) -> list[int]:
    """DPM-Solver-fast's plan for `nfe` model calls: K = nfe // 3 + 1 steps of order 3, ending 2, 1."""
    k = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    return [3] * (k - 1) + [nfe % 3]


def dpm_fast(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """DPM-Solver-fast with len(sigmas) - 1 model calls, uniform in t from sigmas[0] to the smallest
    non-zero sigma (where it stops, as A1111's). With eta > 0 each step goes to sigma_down and adds
    sigma_up of noise."""
    positive = [s for s in sigmas if s > 0]
    t_start, t_end = -math.log(positive[0]), -math.log(positive[-1])
    orders = fast_orders(len(sigmas) - 1)
    ts = [t_start + (t_end - t_start) * i / len(orders) for i in range(len(orders) + 1)]
    for order, t, t_next in zip(orders, ts[:-1], ts[1:], strict=True):
        down, up = ancestral(_sig(t), _sig(t_next), ctx.eta)
        x = yield from _dpm_solver_step(x, t, min(t_end, -math.log(down)), order)
        if up > 0:
            x = x + ctx.noise(x) * ctx.s_noise * up
    return x


# -- DPM-Solver-12 / 23 with adaptive step size (Lu et al. 2022, section 4.2 and appendix) -------------

ADAPTIVE_RTOL: Final = 0.05  # relative tolerance of the local error (A1111's defaults)
ADAPTIVE_ATOL: Final = 0.0078  # absolute tolerance: 1/128, about one 8-bit level in latent units
ADAPTIVE_H_INIT: Final = 0.05  # first step size, in t = -log(sigma)
ADAPTIVE_ACCEPT: Final = 0.81  # a step is kept when the controller's factor reaches this
ADAPTIVE_MAX_CALLS: Final = 2000  # a safety stop: a run that needs more does not converge


def _step_factor(error: float, order: int) -> float:
    """How much to grow (or shrink) the step after a local error `error` (1 = on tolerance): an integral
    controller, (1 / error) ** (1 / order), softened by 1 + atan(f - 1) so one step never grows more
    than ~2.6x or shrinks under ~0.21x."""
    if not math.isfinite(error):
        return 0.0
    f = (1.0 / (error + 1e-8)) ** (1.0 / order)
    return 1.0 + math.atan(f - 1.0)


def _embedded_pair(
    x: torch.Tensor, t: float, t_next: float, order: int, eps0: torch.Tensor
) -> Generator[Request, Eval, tuple[torch.Tensor, torch.Tensor]]:
    """(lower, higher): DPM-Solver-(order-1) and DPM-Solver-order from (x, t) to t_next, sharing the
    model calls: 1 + 2 for order 2 (DPM-Solver-1 / 2 at r1 = 1/2), 1 + 1 + 1 for order 3
    (DPM-Solver-2 / 3 at r1 = 1/3, r2 = 2/3). `eps0` is the noise estimate at (x, t), already known."""
    h = t_next - t
    first = x - _sig(t_next) * math.expm1(h) * eps0  # DPM-Solver-1
    r1 = 0.5 if order == 2 else 1 / 3
    s1 = t + r1 * h
    u1 = x - _sig(s1) * math.expm1(r1 * h) * eps0
    e1 = yield u1, _sig(s1)
    big_d1 = _d(e1, _sig(s1)) - eps0
    second = first - _sig(t_next) / (2 * r1) * math.expm1(h) * big_d1  # DPM-Solver-2 at r1
    if order == 2:
        return first, second
    r2 = 2 / 3
    s2 = t + r2 * h
    u2 = (
        x
        - _sig(s2) * math.expm1(r2 * h) * eps0
        - _sig(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * big_d1
    )
    e2 = yield u2, _sig(s2)
    big_d2 = _d(e2, _sig(s2)) - eps0
    third = first - _sig(t_next) / r2 * (math.expm1(h) / h - 1) * big_d2
    return second, third


def dpm_adaptive(
    x: torch.Tensor,
    sigmas: list[float],
    ctx: Context,
    order: int = 3,
    rtol: float = ADAPTIVE_RTOL,
    atol: float = ADAPTIVE_ATOL,
) -> Run:
    """DPM-Solver with adaptive step size, from sigmas[0] to the smallest non-zero sigma (where it stops,
    as A1111's "DPM adaptive"). The schedule's other points and the step count are not used: each step
    runs an embedded pair (DPM-Solver-2 inside DPM-Solver-3), and their difference, measured against
    max(atol, rtol * |x|), decides whether the step is kept and how long the next one is. With eta > 0
    a kept step goes to sigma_down and adds sigma_up of noise (A1111 runs it at eta 1).

    The model is called at (x, t) once per position: a rejected step retries from the same point with
    the same estimate there. Errors are measured over the whole batch, so the images of one batch share
    their steps."""
    positive = [s for s in sigmas if s > 0]
    t, t_end = -math.log(positive[0]), -math.log(positive[-1])
    h = ADAPTIVE_H_INIT
    x_prev = x
    calls = 0
    eps0: torch.Tensor | None = None
    while t < t_end - 1e-5:
        t_next = min(t_end, t + h)
        down, up = ancestral(_sig(t), _sig(t_next), ctx.eta)
        t_down = min(t_end, -math.log(down))
        if eps0 is None:
            e0 = yield x, _sig(t)
            x, eps0 = e0.x, _d(e0, _sig(t))
            calls += 1
        lower, higher = yield from _embedded_pair(x, t, t_down, order, eps0)
        calls += order - 1
        if calls > ADAPTIVE_MAX_CALLS:
            raise RuntimeError(f"DPM adaptive did not converge in {ADAPTIVE_MAX_CALLS} model calls")
        scale = torch.clamp(rtol * torch.maximum(lower.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.vector_norm((lower - higher) / scale)) / math.sqrt(lower.numel())
        factor = _step_factor(error, order)
        if factor >= ADAPTIVE_ACCEPT:
            x_prev = lower
            x = higher + (ctx.noise(higher) * ctx.s_noise * up if up > 0 else 0)
            t = t_next
            eps0 = None
        h *= max(factor, 0.1)
    return x


# -- Restart (Xu et al. 2023) ------------------------------------------------------------------------

RESTART_FROM: Final = 0.1  # restart when the main schedule reaches this sigma...
RESTART_TO: Final = 2.0  # ...going back up to this one (A1111's defaults)


def restart_segments(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (sigma, sigma_next) Heun steps Restart runs, in order, for a schedule of N steps.

    Under 20 steps: the schedule as it is. From 20: 9 steps of the budget form one restart interval
    (2 intervals of N // 4 steps from 36), entered where the main schedule (Karras over the rest of the
    steps, between the schedule's ends) comes nearest sigma 0.1, and starting from its point nearest
    sigma 2: after the main step into the 0.1 point, the restart walks a Karras schedule back down.
    """
    steps = len(sigmas) - 1
    if steps < 20:
        return list(zip(sigmas[:-1], sigmas[1:], strict=True))
    per, times = (steps // 4, 2) if steps >= 36 else (9, 1)
    m = sched.ModelSigmas(torch.tensor([sigmas[-2], sigmas[0]], dtype=torch.float64))
    main = sched.karras(steps - per * times, m).tolist()
    lo = min(range(len(main)), key=lambda i: abs(main[i] - RESTART_FROM))
    hi = min(range(len(main)), key=lambda i: abs(main[i] - RESTART_TO))
    ends = torch.tensor([main[lo], main[hi]], dtype=torch.float64)
    inner = sched.karras(per + 1, sched.ModelSigmas(ends))[:-1].tolist()
    inner[0], inner[-1] = main[hi], main[lo]  # exactly the main schedule's points (no rounding jump)
    out: list[tuple[float, float]] = []
    for i in range(len(main) - 1):
        out.append((main[i], main[i + 1]))
        if i + 1 == lo and hi < lo:
            out += list(zip(inner[:-1], inner[1:], strict=True)) * times
    return out


def restart(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """Heun steps along `restart_segments`; where the next step starts above the last sigma reached,
    x first gets fresh noise of variance s_start^2 - s_last^2 (the restart's forward jump)."""
    last: float | None = None
    for s, sn in restart_segments(sigmas):
        if last is not None and s > last:
            x = x + ctx.noise(x) * ctx.s_noise * math.sqrt(s**2 - last**2)
        x = yield from heun(x, [s, sn], ctx)
        last = sn
    return x


# -- CFG++ (Chung et al. 2024) -------------------------------------------------------------------------


def ddim_cfgpp(x: torch.Tensor, sigmas: list[float], ctx: Context) -> Run:
    """DDIM with CFG++: denoise with the guided estimate (guidance scale / 12.5), but step on along the
    *unconditional* noise direction: x' = den_g + sqrt(sn^2 - up^2) eps_u + up z, eps_u = (x - den_u) / s,
    up = eta * sn * sqrt(1 - sn^2 / s^2) (DDIM's eta in sigma space; A1111's default eta is 0)."""
    for s, sn in zip(sigmas[:-1], sigmas[1:], strict=True):
        e = yield x, s
        if e.uncond is None:
            raise ValueError("DDIM CFG++ needs the unconditional prediction of every step")
        den = e.uncond + (e.denoised - e.uncond) / CFGPP_SCALE
        if sn == 0:
            x = den
            continue
        _, up = ancestral(s, sn, ctx.eta)
        eps_u = (e.x - e.uncond) / s
        x = den + math.sqrt(sn**2 - up**2) * eps_u
        if up > 0:
            x = x + ctx.noise(x) * ctx.s_noise * up
    return x
