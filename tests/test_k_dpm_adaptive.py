"""DPM adaptive (A1111's "DPM adaptive", alias k_dpm_ad): DPM-Solver-2/3 with error-controlled steps.

Checked against exact solutions of the probability-flow ODE for analytic denoisers, then through the
scheduler (the steps setting is not used), the engine (txt2img on the tiny SD1 model) and the lists.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.sampling import k_samplers as ks
from webui.core.sampling.k_scheduler import KScheduler
from webui.core.sampling.samplers import list_samplers, make_scheduler, resolve
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest

SIGMA_MAX, SIGMA_MIN = 14.6, 0.03
C = 0.5  # the data's standard deviation in the Gaussian case
SD1 = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def _x0(seed: int = 0) -> torch.Tensor:
    return (
        torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        * SIGMA_MAX
    )


def _solve(
    denoise: Any, x: torch.Tensor, ctx: ks.Context | None = None, **kw: Any
) -> tuple[torch.Tensor, list[float]]:
    run = ks.dpm_adaptive(
        x.clone(), [SIGMA_MAX, 1.0, SIGMA_MIN, 0.0], ctx or ks.Context(torch.zeros_like, 0.0), **kw
    )
    calls: list[float] = []
    try:
        x, s = next(run)
        while True:
            calls.append(s)
            x, s = run.send(ks.Eval(x, denoise(x, s)))
    except StopIteration as done:
        return done.value, calls


def _gaussian_exact(x0: torch.Tensor) -> torch.Tensor:
    # data N(0, C^2): denoised = x C^2 / (C^2 + s^2), and the ODE keeps x / sqrt(C^2 + s^2) constant
    return x0 * math.sqrt(C**2 + SIGMA_MIN**2) / math.sqrt(C**2 + SIGMA_MAX**2)


def _gaussian(x: torch.Tensor, s: float) -> torch.Tensor:
    return x * C**2 / (C**2 + s**2)


def test_a_point_mass_is_solved_exactly_from_max_to_min_sigma() -> None:
    mu = torch.full((2, 4, 8, 8), 0.3, dtype=torch.float64)
    x0 = _x0()
    out, calls = _solve(lambda x, s: mu, x0)
    assert calls[0] == pytest.approx(SIGMA_MAX) and min(calls) >= SIGMA_MIN - 1e-9
    assert torch.allclose(out, mu + SIGMA_MIN / SIGMA_MAX * (x0 - mu), atol=1e-9)  # stops at sigma_min


@pytest.mark.parametrize("order", [2, 3])
def test_error_control_converges_as_the_tolerance_tightens(order: int) -> None:
    x0 = _x0(1)
    exact = _gaussian_exact(x0)
    errors, counts = [], []
    for rtol in (0.05, 1e-3, 1e-5):
        out, calls = _solve(_gaussian, x0, order=order, rtol=rtol, atol=1e-6)
        errors.append(float((out - exact).abs().max() / exact.abs().max()))
        counts.append(len(calls))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4, errors
    assert counts[0] < counts[1] < counts[2], counts
    assert errors[1] < 10 * 1e-3  # the local tolerance bounds the global error within a small factor


def test_order_three_needs_fewer_calls_than_order_two_at_tight_tolerance() -> None:
    x0 = _x0(2)
    calls = [len(_solve(_gaussian, x0, order=o, rtol=1e-5, atol=1e-6)[1]) for o in (2, 3)]
    assert calls[1] < calls[0] / 2, calls


def test_a_rejected_step_retries_without_calling_the_model_again_at_its_start() -> None:
    x0 = _x0(3)
    _, calls = _solve(_gaussian, x0, rtol=1e-4, atol=1e-6)
    starts = [s for s in calls]
    # a retry from the same point asks only for the pair's inner points: never the same sigma twice in a row
    assert all(a != b for a, b in zip(starts, starts[1:], strict=False))


def test_eta_adds_noise_on_accepted_steps_only() -> None:
    drawn: list[int] = []

    def noise(x: torch.Tensor) -> torch.Tensor:
        drawn.append(1)
        return torch.ones_like(x)

    x0 = _x0(4)
    quiet, _ = _solve(_gaussian, x0)
    noisy, calls = _solve(_gaussian, x0, ks.Context(noise, eta=1.0))
    assert drawn and len(drawn) < len(calls) and not torch.allclose(quiet, noisy)


def test_the_steps_setting_does_not_change_the_run() -> None:
    x0 = _x0(5).to(torch.float32)
    outs = []
    for steps in (3, 30):
        sch = make_scheduler("DPM adaptive", None, SD1, eta=0.0)
        assert isinstance(sch, KScheduler) and sch.adaptive
        sch.set_timesteps(steps)
        x = x0 * sch.init_noise_sigma / SIGMA_MAX
        n = 0
        for t in sch.timesteps:
            sigma = sch._sigma_now()
            out = (x - _gaussian(x.double(), sigma).float()) / sigma  # epsilon prediction
            x, _ = sch.step(out, t, x, return_dict=False)
            n += 1
            assert len(sch.timesteps) >= n
        assert len(sch.timesteps) == n  # once done, the count is exact
        outs.append((x, n))
    assert outs[0][1] == outs[1][1] and torch.equal(outs[0][0], outs[1][0])


def test_listed_with_a1111_name_and_alias() -> None:
    entry = next(s for s in list_samplers() if s["name"] == "DPM adaptive")
    assert entry["aliases"] == ["k_dpm_ad"]
    assert resolve("k_dpm_ad")[0].name == "DPM adaptive"


# -- the engine --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    out = tmp_path_factory.mktemp("adaptive")
    return Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), m)


BASE: dict[str, Any] = dict(
    prompt="a red apple", checkpoint="tiny-sd1", width=64, height=64, seed=7, save_images=False
)


def test_txt2img_runs_and_records_the_sampler(engine: Engine) -> None:
    """One run (tens of model calls on the tiny model: the steps setting is not used, see above)."""
    events: list[Any] = []
    a = engine.run(Txt2ImgRequest(**BASE, sampler_name="k_dpm_ad", steps=2), progress=events.append)
    pa = np.asarray(a.images[0].image)
    assert pa.std() > 0
    assert parse_infotext(a.images[0].infotext)["Sampler"] == "DPM adaptive"
    euler = engine.run(Txt2ImgRequest(**BASE, sampler_name="Euler", steps=2))
    assert not np.array_equal(np.asarray(euler.images[0].image), pa)
    steps = [e for e in events if getattr(e, "steps", 0)]
    assert len(steps) > 2 and all(e.step <= e.steps for e in steps)  # more calls than the 2 steps asked
    assert steps[-1].step == steps[-1].steps  # progress ends at 100% whatever the estimate was


def test_img2img_hires_and_refiner_are_refused_naming_the_field() -> None:
    from PIL import Image

    init = Image.new("RGB", (64, 64), "red")
    with pytest.raises(RequestError) as e:
        Img2ImgRequest(**BASE, init_images=(init,), sampler_name="DPM adaptive").validate()
    assert e.value.field == "sampler_name"
    with pytest.raises(RequestError) as e:
        Txt2ImgRequest(**BASE, sampler_name="DPM adaptive", enable_hr=True).validate()
    assert e.value.field == "hr_sampler_name"
    Txt2ImgRequest(**BASE, sampler_name="DPM adaptive", enable_hr=True, hr_sampler_name="Euler").validate()
    with pytest.raises(RequestError) as e:
        Txt2ImgRequest(
            **BASE, sampler_name="DPM adaptive", refiner_checkpoint="x", refiner_switch_at=0.5
        ).validate()
    assert e.value.field == "refiner_checkpoint"
