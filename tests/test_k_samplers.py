"""Our sigma-space samplers and schedules, against their published formulas written out again here.

The toy model is an analytic Gaussian denoiser: for data x0 ~ N(MU, C^2) per coordinate, the exact
denoiser at noise sigma is D(x, sigma) = (C^2 x + sigma^2 MU) / (C^2 + sigma^2), and the probability-flow
ODE keeps (x - MU) / sqrt(C^2 + sigma^2) constant, so the exact end point of a deterministic sampler is
known; stochastic samplers must end with mean MU and standard deviation C.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import stats

from webui.core.sampling import k_samplers as ks
from webui.core.sampling import sigma_schedules as sched
from webui.core.sampling.k_scheduler import KScheduler
from webui.core.sampling.samplers import make_scheduler, set_timesteps

MU, C = 0.5, 0.8
SD1 = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def _table() -> np.ndarray:
    """SD's training sigmas, from the betas (scaled linear: linspace of square roots, squared)."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    return np.sqrt((1 - ac) / ac)


TABLE = _table()
M = sched.ModelSigmas.from_config(SD1)
SMIN, SMAX = float(TABLE[0]), float(TABLE[-1])


def gauss_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (C * C * x + sigma * sigma * MU) / (C * C + sigma * sigma)


def drive(
    sampler: ks.Sampler,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    eta: float = 0.0,
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    denoiser: Callable[[torch.Tensor, float], torch.Tensor] = gauss_denoiser,
    uncond: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Run a sampler generator with a model; returns the final x and the sigmas it asked for."""
    ctx = ks.Context(noise=noise or torch.zeros_like, eta=eta)
    run = sampler(x, sigmas, ctx)
    asked: list[float] = []
    xi, s = next(run)
    try:
        while True:
            asked.append(s)
            u = (uncond or denoiser)(xi, s)
            xi, s = run.send(ks.Eval(xi, denoiser(xi, s), u))
    except StopIteration as done:
        return done.value, asked


# -- schedules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(sched.SCHEDULES))
@pytest.mark.parametrize("n", [1, 2, 7, 20, 50])
def test_every_schedule_is_n_plus_one_decreasing_sigmas_ending_at_zero(label: str, n: int) -> None:
    s = sched.schedule_sigmas(label, n, M)
    assert len(s) == n + 1 and s[-1] == 0
    assert torch.isfinite(s).all() and (s[:-1] > 0).all()
    assert (s[:-1] - s[1:] > 0).all(), f"{label} is not strictly decreasing: {s.tolist()}"
    assert float(s[0]) <= SMAX * (1 + 1e-4)  # Align Your Steps' published 14.615 and 0.029
    if n > 1:
        assert float(s[-2]) >= SMIN * (1 - 1e-2)


def test_model_sigmas_are_the_training_table() -> None:
    np.testing.assert_allclose(M.sigmas.numpy(), TABLE, rtol=1e-6)
    t = torch.tensor([0.0, 10.5, 999.0])
    np.testing.assert_allclose(M.t(M.sigma(t)).numpy(), t.numpy(), atol=1e-6)
    mid = math.exp((math.log(TABLE[10]) + math.log(TABLE[11])) / 2)
    assert float(M.sigma(10.5)) == pytest.approx(mid, rel=1e-9)


@pytest.mark.parametrize("n", [5, 20])
def test_formula_schedules(n: int) -> None:
    k = np.arange(n) / (n - 1)
    got = {label: sched.schedule_sigmas(label, n, M)[:-1].numpy() for label in sched.SCHEDULES}
    rho = 7
    karras = (SMAX ** (1 / rho) + k * (SMIN ** (1 / rho) - SMAX ** (1 / rho))) ** rho
    np.testing.assert_allclose(got["Karras"], karras, rtol=1e-9)
    np.testing.assert_allclose(got["Exponential"], SMAX * (SMIN / SMAX) ** k, rtol=1e-9)
    np.testing.assert_allclose(got["Polyexponential"], got["Exponential"], rtol=1e-9)  # rho 1
    kl = np.tan((1 - k) * np.arctan(SMAX) + k * np.arctan(SMIN))
    np.testing.assert_allclose(got["KL Optimal"], kl, rtol=1e-9)
    simple = [TABLE[999 - math.floor(i * 1000 / n)] for i in range(n)]
    np.testing.assert_allclose(got["Simple"], simple, rtol=1e-9)
    ddim = [TABLE[t] for t in reversed(range(1, 1000, 1000 // n))][-n:]
    np.testing.assert_allclose(got["DDIM"], ddim, rtol=1e-9)
    beta = SMIN + stats.beta.ppf(1 - k, 0.6, 0.6) * (SMAX - SMIN)
    np.testing.assert_allclose(got["Beta"], beta, rtol=1e-9)
    assert got["Uniform"][0] == pytest.approx(SMAX) and got["Uniform"][-1] == pytest.approx(SMIN)
    np.testing.assert_allclose(got["Normal"], got["Uniform"])
    sgm = got["SGM Uniform"]
    assert sgm[0] == pytest.approx(SMAX) and sgm[-1] > SMIN  # the last of N + 1 points dropped


def test_polyexponential_rho() -> None:
    k = np.linspace(0, 1, 9)
    want = np.exp(math.log(SMIN) + (1 - k) ** 2 * (math.log(SMAX) - math.log(SMIN)))
    np.testing.assert_allclose(sched.polyexponential(9, M, rho=2.0)[:-1].numpy(), want, rtol=1e-9)


def test_align_your_steps_is_nvidias_table_interpolated_in_log_sigma() -> None:
    # A1111's reading: N steps are N points of the table (11 published points: N = 11 is the table
    # itself), then 0
    eleven = sched.schedule_sigmas("Align Your Steps", 11, M)
    np.testing.assert_allclose(eleven.numpy(), [*sched.AYS_SD15, 0.0], rtol=1e-12)
    sdxl = sched.schedule_sigmas("Align Your Steps", 11, M, model_group="sdxl")
    np.testing.assert_allclose(sdxl.numpy(), [*sched.AYS_SDXL, 0.0], rtol=1e-12)
    ten = sched.schedule_sigmas("Align Your Steps", 10, M)
    assert float(ten[0]) == pytest.approx(14.615) and float(ten[-2]) == pytest.approx(0.029)
    # 21 points on an even grid contain the 11 published ones at every other point
    twenty = sched.schedule_sigmas("Align Your Steps", 21, M)[:-1]
    np.testing.assert_allclose(twenty[::2].numpy(), sched.AYS_SD15, rtol=1e-9)
    between = math.sqrt(sched.AYS_SD15[0] * sched.AYS_SD15[1])  # midpoint in log sigma
    assert float(twenty[1]) == pytest.approx(between, rel=1e-9)


# -- single steps against their update rules ---------------------------------------------------------

X = torch.tensor([1.7, -0.3, 4.0], dtype=torch.float64)
Z = torch.tensor([0.25, -1.0, 0.5], dtype=torch.float64)  # the "random" noise, fixed


def _fixed_noise(x: torch.Tensor) -> torch.Tensor:
    return Z.clone()


def test_euler_ancestral_step() -> None:
    s, sn = 3.0, 1.2
    up = sn * math.sqrt(s**2 - sn**2) / s  # eta 1
    down = math.sqrt(sn**2 - up**2)
    out, asked = drive(ks.euler_ancestral, X, [s, sn], eta=1.0, noise=_fixed_noise)
    d = (X - gauss_denoiser(X, s)) / s
    torch.testing.assert_close(out, X + d * (down - s) + up * Z)
    assert asked == [s]


def test_dpmpp_2s_ancestral_step() -> None:
    s, sn, eta = 3.0, 1.2, 1.0
    up = min(sn, eta * sn * math.sqrt(1 - sn**2 / s**2))
    down = math.sqrt(sn**2 - up**2)
    s_mid = math.sqrt(s * down)  # the midpoint in log sigma
    out, asked = drive(ks.dpmpp_2s_ancestral, X, [s, sn], eta=eta, noise=_fixed_noise)
    assert asked == pytest.approx([s, s_mid])
    x_mid = (s_mid / s) * X + (1 - s_mid / s) * gauss_denoiser(X, s)
    want = (down / s) * X + (1 - down / s) * gauss_denoiser(x_mid, s_mid) + up * Z
    torch.testing.assert_close(out, want)
    # with eta 0 it is the deterministic DPM-Solver++(2S)
    out0, asked0 = drive(ks.dpmpp_2s_ancestral, X, [s, sn], eta=0.0)
    assert asked0 == pytest.approx([s, math.sqrt(s * sn)])


@pytest.mark.parametrize("heun_corrector", [False, True])
def test_dpmpp_2m_sde_second_step(heun_corrector: bool) -> None:
    s0, s1, s2, eta = 5.0, 2.0, 0.7, 1.0
    sampler = ks.dpmpp_2m_sde_heun if heun_corrector else ks.dpmpp_2m_sde
    out, asked = drive(sampler, X, [s0, s1, s2], eta=eta, noise=_fixed_noise)
    assert asked == [s0, s1]
    h0, h1 = math.log(s0 / s1), math.log(s1 / s2)

    def first_order(x: torch.Tensor, s: float, sn: float, h: float, den: torch.Tensor) -> torch.Tensor:
        noise = sn * math.sqrt(1 - math.exp(-2 * eta * h)) * Z
        return (sn / s) * math.exp(-eta * h) * x + (1 - math.exp(-(1 + eta) * h)) * den + noise

    den0 = gauss_denoiser(X, s0)
    x1 = first_order(X, s0, s1, h0, den0)
    den1 = gauss_denoiser(x1, s1)
    r = h0 / h1
    hh = (1 + eta) * h1
    c = (math.exp(-hh) - 1) / hh + 1 if heun_corrector else (1 - math.exp(-hh)) / 2
    want = first_order(x1, s1, s2, h1, den1) + c * (den1 - den0) / r
    torch.testing.assert_close(out, want)


def test_dpmpp_3m_sde_third_step() -> None:
    sig, eta = [6.0, 3.0, 1.1, 0.4], 0.5
    out, _ = drive(ks.dpmpp_3m_sde, X, sig, eta=eta, noise=_fixed_noise)
    x, dens, hs = X, [], []
    for s, sn in zip(sig[:-1], sig[1:], strict=True):
        den = gauss_denoiser(x, s)
        h = math.log(s / sn)
        he = (1 + eta) * h
        phi2 = (math.exp(-he) - 1) / he + 1
        phi3 = phi2 / he - 0.5
        nxt = math.exp(-he) * x + (1 - math.exp(-he)) * den
        if len(dens) == 1:
            nxt = nxt + phi2 * (den - dens[-1]) * h / hs[-1]
        if len(dens) == 2:
            r0, r1 = hs[-1] / h, hs[-2] / h
            d1_0 = (den - dens[-1]) / r0
            d1_1 = (dens[-1] - dens[-2]) / r1
            nxt = nxt + phi2 * (d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)) - phi3 * (d1_0 - d1_1) / (r0 + r1)
        x = nxt + sn * math.sqrt(1 - math.exp(-2 * eta * h)) * Z
        dens.append(den)
        hs.append(h)
    torch.testing.assert_close(out, x)


def test_dpm_fast_plan_and_second_order_step() -> None:
    assert ks.fast_orders(10) == [3, 3, 3, 1] and ks.fast_orders(9) == [3, 3, 2, 1]
    assert ks.fast_orders(8) == [3, 3, 2] and sum(ks.fast_orders(37)) == 37
    sig = [8.0, 2.0, 0.5, 0.0]  # 3 model calls: one DPM-Solver-2 step, then DPM-Solver-1
    out, asked = drive(ks.dpm_fast, X, sig)
    t0, t2 = -math.log(8.0), -math.log(0.5)
    ts = [t0, t0 + (t2 - t0) / 2, t2]  # uniform in t = -log sigma, from sigma 8 to the last non-zero
    mid = t0 + (ts[1] - t0) / 2
    assert asked == pytest.approx([math.exp(-t0), math.exp(-mid), math.exp(-ts[1])])

    def eps(x: torch.Tensor, t: float) -> torch.Tensor:
        return (x - gauss_denoiser(x, math.exp(-t))) / math.exp(-t)

    h = ts[1] - t0
    u = X - math.exp(-mid) * (math.exp(h / 2) - 1) * eps(X, t0)
    x1 = X - math.exp(-ts[1]) * (math.exp(h) - 1) * eps(X, t0)
    x1 = x1 - math.exp(-ts[1]) * (math.exp(h) - 1) * (eps(u, mid) - eps(X, t0))
    want = x1 - math.exp(-t2) * (math.exp(t2 - ts[1]) - 1) * eps(x1, ts[1])
    torch.testing.assert_close(out, want)


def test_ddim_cfgpp_step() -> None:
    s, sn = 3.0, 1.2
    cond = lambda x, sg: gauss_denoiser(x, sg) + 0.3  # noqa: E731
    out, _ = drive(ks.ddim_cfgpp, X, [s, sn], denoiser=cond, uncond=gauss_denoiser)
    den_u = gauss_denoiser(X, s)
    den = den_u + (cond(X, s) - den_u) / 12.5  # A1111's scale: CFG 12.5 is CFG++ 1
    torch.testing.assert_close(out, den + sn * (X - den_u) / s)
    with pytest.raises(ValueError, match="unconditional"):
        run = ks.ddim_cfgpp(X, [s, sn], ks.Context(noise=torch.zeros_like))
        next(run)
        run.send(ks.Eval(X, den))


def test_restart_plan() -> None:
    below = sched.karras(12, M).tolist()
    assert ks.restart_segments(below) == list(zip(below[:-1], below[1:], strict=True))
    for steps, per, times in ((20, 9, 1), (40, 10, 2)):
        segments = ks.restart_segments(sched.karras(steps, M).tolist())
        assert len(segments) == steps  # the restarts come out of the step budget
        pairs = zip(segments[:-1], segments[1:], strict=True)
        jumps = [i for i, ((_, a), (b, _)) in enumerate(pairs) if b > a]
        assert len(jumps) == times
        for i in jumps:
            low, high = segments[i][1], segments[i + 1][0]
            assert low == pytest.approx(0.1, abs=0.05) and high == pytest.approx(2.0, rel=0.3)
            assert segments[i + per][1] == low  # `per` Heun steps back down to where it jumped
    # each restart adds noise of variance high^2 - low^2
    sig = sched.karras(20, M).tolist()
    x = torch.zeros(20000, dtype=torch.float64)
    seen = []
    run = ks.restart(x, sig, ks.Context(noise=torch.randn_like))
    xi, s = next(run)
    last = None
    try:
        while True:
            if last is not None and s > last:
                seen.append((float(xi.std()), s))
            last = s
            xi, s = run.send(ks.Eval(xi, torch.zeros_like(xi)))
    except StopIteration:
        pass
    assert len(seen) == 1 and seen[0][0] == pytest.approx(seen[0][1], rel=0.05)


# -- convergence on the Gaussian ---------------------------------------------------------------------

ODE = {
    "euler": ks.euler,
    "heun": ks.heun,
    "dpmpp_2m": ks.dpmpp_2m,
    "dpmpp_2m_sde_heun": ks.dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": ks.dpmpp_3m_sde,
    "dpmpp_2s_ancestral": ks.dpmpp_2s_ancestral,
    "dpm_fast": ks.dpm_fast,
    "ddim_cfgpp": ks.ddim_cfgpp,
}


@pytest.mark.parametrize("name", sorted(ODE))
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name: str) -> None:
    x_t = torch.randn(512, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SMAX
    errors = []
    for n in (8, 64):
        sig = sched.karras(n, M).tolist()
        out, _ = drive(ODE[name], x_t, sig, eta=0.0)
        end = sig[-2] if name == "dpm_fast" else 0.0  # DPM fast stops at the last non-zero sigma
        exact = MU + (x_t - MU) * math.sqrt(C * C + end * end) / math.sqrt(C * C + SMAX * SMAX)
        errors.append(float((out - exact).abs().max()))
    first_order = name in ("euler", "ddim_cfgpp")
    assert errors[1] < errors[0] / 4 and errors[1] < (0.1 if first_order else 0.01), errors


@pytest.mark.parametrize(
    "name", ["euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde",
             "dpm_fast", "restart"]
)  # fmt: skip
def test_stochastic_samplers_end_with_the_data_distribution(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(20000, generator=gen, dtype=torch.float64) * SMAX

    def noise(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=gen, dtype=x.dtype)

    # Euler a is first order, slow to reach the distribution; the Heun corrector overshoots a little
    steps = {"euler_ancestral": 300, "dpmpp_2m_sde_heun": 100}.get(name, 30)
    out, _ = drive(getattr(ks, name), x_t, sched.karras(steps, M).tolist(), eta=1.0, noise=noise)
    assert float(out.mean()) == pytest.approx(MU, abs=0.03)
    assert float(out.std()) == pytest.approx(C, rel=0.03)


# -- the scheduler interface -------------------------------------------------------------------------


def _loop(scheduler: KScheduler, x: torch.Tensor, prediction: str = "epsilon", **kw: object) -> torch.Tensor:
    """The loop's view: model(scale_model_input(x), t) -> eps or v; then step()."""
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        sigma = float(M.sigma(float(t)))
        scaled = scheduler.scale_model_input(x, t)
        torch.testing.assert_close(scaled, x / math.sqrt(sigma**2 + 1), rtol=1e-4, atol=1e-5)
        den = gauss_denoiser(x, sigma)
        eps = (x - den) / sigma
        out = eps
        if prediction == "v_prediction":  # v = alpha eps - s x0 in the model's (VP) scaling
            alpha, s = 1 / math.sqrt(sigma**2 + 1), sigma / math.sqrt(sigma**2 + 1)
            out = alpha * eps - s * den
        x = scheduler.step(out, t, x, return_dict=False, **kw)[0]  # type: ignore[arg-type]
    return x


@pytest.mark.parametrize("sampler", ["DPM++ 3M SDE", "DPM++ 2S a", "Restart", "DPM fast"])
def test_scheduler_runs_the_sampler_and_reads_v_prediction(sampler: str) -> None:
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    runs = []
    for prediction in ("epsilon", "v_prediction"):
        sch = make_scheduler(sampler, None, {**SD1, "prediction_type": prediction}, eta=0.0)
        set_timesteps(sch, 12)
        runs.append(_loop(sch, x, prediction))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)  # t is float32
    info = make_scheduler(sampler, None, SD1, eta=0.0)
    set_timesteps(info, 12)
    direct, asked = drive(info.sampler, x * info.init_noise_sigma, info.sigmas.tolist(), eta=0.0)
    torch.testing.assert_close(runs[0], direct, rtol=1e-4, atol=1e-4)
    assert len(info.timesteps) == len(asked)


def test_img2img_begin_index_runs_the_tail_of_the_schedule() -> None:
    sch = make_scheduler("DPM++ 2S a", "Karras", SD1, eta=0.0)
    set_timesteps(sch, 10, begin_index=4)
    tail = sch.sigmas[4:].tolist()
    _, asked = drive(ks.dpmpp_2s_ancestral, torch.zeros(1), tail)
    assert len(sch.timesteps[4:]) == len(asked)
    np.testing.assert_allclose(M.sigma(sch.timesteps[4:].double()).numpy(), asked, rtol=1e-5)
    init, noise = torch.zeros(1, 3), torch.ones(1, 3)
    noised = sch.add_noise(init, noise, sch.timesteps[4:5])
    assert float(noised[0, 0]) == pytest.approx(tail[0], rel=1e-5)


def test_scheduler_refusals() -> None:
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        make_scheduler("Restart", None, {**SD1, "rescale_betas_zero_snr": True})
    sch = make_scheduler("DPM fast", None, SD1)  # eta 1 (A1111's default for it)
    set_timesteps(sch, 6)
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="make the scheduler with eta=0.0"):
        sch.step(x, sch.timesteps[0], x, eta=0.0)
    with pytest.raises(ValueError, match="one generator per image"):
        run = make_scheduler("DPM++ 3M SDE", None, SD1)
        set_timesteps(run, 4)
        for t in run.timesteps:
            x = run.step(x, t, x, return_dict=False)[0]
    euler = make_scheduler("Euler", "Simple", SD1)
    set_timesteps(euler, 4)
    with pytest.raises(ValueError, match="s_churn"):
        euler.step(x, euler.timesteps[0], x, s_churn=1.0)


def test_step_noise_comes_from_each_image_s_generator() -> None:
    outs = []
    for seeds in ([5, 6], [6]):
        sch = make_scheduler("DPM++ 2M SDE Heun", None, SD1)
        set_timesteps(sch, 6)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x = torch.stack([torch.full((1, 2, 2), float(s)) for s in seeds])
        outs.append(_loop(sch, x.double(), generator=gens))
    torch.testing.assert_close(outs[0][1:], outs[1])
