"""The sampler registry: every listed (sampler, schedule) builds and runs; names resolve as in A1111."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

from webui.core.sampling.noise import NoiseSource
from webui.core.sampling.samplers import (
    ADAPTIVE,
    SAMPLERS,
    SCHEDULE_TYPES,
    UnknownSampler,
    list_samplers,
    list_schedulers,
    make_scheduler,
    resolve,
    set_timesteps,
)

CONFIGS = Path(__file__).resolve().parents[1] / "webui" / "assets" / "configs"
SHAPE = (1, 4, 8, 8)
SIGMA_MAX = 14.6146  # sigma at t=999 of SD's scaled-linear betas

# diffusers' schedulers trip NumPy 2 deprecations on every step; torchsde warns about float32 rounding
# of the Brownian interval's ends. Neither is ours to fix, and there are hundreds of thousands.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have:UserWarning"),
]


def _base(arch: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / arch / "scheduler" / "scheduler_config.json").read_text())
    return data


# SD1 ships a PNDM config, SDXL an Euler one; SD2-v a DDIM one with v_prediction.
BASES = {arch: _base(arch) for arch in ("sd1", "sdxl")}
COMBOS = [(s.name, label) for s in SAMPLERS for label in s.schedules]
# the combinations diffusers runs (the others run on our KScheduler: tests/test_k_samplers.py)
DIFFUSERS_COMBOS = [(s.name, label) for s in SAMPLERS for label in s.schedules if not s.runs_own(label)]
# A1111's "Normal" spaces timesteps from t(sigma_max) to t(sigma_min), which are the table's ends: the same
# sigmas as "Uniform"; Polyexponential with A1111's rho 1 is Exponential (up to rounding).
SYNONYMS = {("Normal", "Uniform"), ("Polyexponential", "Exponential")}


def _run(
    scheduler: Any, info_name: str, steps: int, x: torch.Tensor, noise: NoiseSource | None = None
) -> torch.Tensor:
    info, _ = resolve(info_name)
    set_timesteps(scheduler, steps)
    eps = torch.full_like(x, 0.1)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        scheduler.scale_model_input(x, t)
        kw = {}
        if info.step_noise == "generator":
            source = noise or NoiseSource.for_seeds(tuple(x.shape[1:]), [7] * x.shape[0])  # type: ignore[arg-type]
            noise = source
            kw["generator"] = source.generator_list()
        if "uncond_output" in inspect.signature(scheduler.step).parameters:  # CFG++
            kw["uncond_output"] = eps
        x = scheduler.step(eps, t, x, **kw, return_dict=False)[0]
    return x


def _sample() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", sorted(BASES))
@pytest.mark.parametrize(("sampler", "schedule"), COMBOS)
def test_every_combination_builds_and_runs(sampler: str, schedule: str, arch: str) -> None:
    scheduler = make_scheduler(sampler, schedule, BASES[arch], noise_seeds=[1])
    out = _run(scheduler, sampler, 20, _sample())
    assert out.shape == SHAPE
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("steps", [1, 2, 3, 50])
@pytest.mark.parametrize(("sampler", "schedule"), COMBOS)
def test_short_and_long_runs(sampler: str, schedule: str, steps: int) -> None:
    scheduler = make_scheduler(sampler, schedule, BASES["sd1"], noise_seeds=[1])
    assert torch.isfinite(_run(scheduler, sampler, steps, _sample())).all()


@pytest.mark.parametrize(("sampler", "schedule"), DIFFUSERS_COMBOS)
def test_no_kwarg_is_silently_ignored(sampler: str, schedule: str) -> None:
    info, label = resolve(sampler, schedule)
    accepted = inspect.signature(getattr(diffusers, info.scheduler_class).__init__).parameters
    passed = {**info.kwargs, **info.schedule_kwargs[label]}
    assert set(passed) <= set(accepted)
    scheduler = make_scheduler(sampler, schedule, BASES["sd1"], noise_seeds=[1])
    for key, value in passed.items():
        assert scheduler.config[key] == value, key


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS if len(s.schedules) > 1])
def test_each_schedule_changes_the_timesteps(sampler: str) -> None:
    info, _ = resolve(sampler)
    seen = {}
    for label in info.schedules:
        scheduler = make_scheduler(sampler, label, BASES["sd1"], noise_seeds=[1])
        set_timesteps(scheduler, 20)
        key = tuple(round(v, 6) for v in getattr(scheduler, "sigmas", scheduler.timesteps).tolist())
        assert key not in seen or (label, seen[key]) in SYNONYMS, f"{label} gives the same as {seen.get(key)}"
        seen[key] = label


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS if "Karras" in s.schedules])
@pytest.mark.parametrize("label", ["Karras", "Exponential", "Beta"])
def test_sigma_schedules_span_the_full_range(sampler: str, label: str) -> None:
    """With SD's "leading" spacing, diffusers' k-diffusion ports would start Karras at sigma(901) ~ 8.4."""
    for base in BASES.values():
        scheduler = make_scheduler(sampler, label, base, noise_seeds=[1])
        set_timesteps(scheduler, 20)
        assert float(scheduler.sigmas[0]) == pytest.approx(SIGMA_MAX, rel=1e-3)


def test_schedule_kwargs_override_the_base_config() -> None:
    base = {**BASES["sdxl"], "use_karras_sigmas": True, "timestep_spacing": "trailing"}
    scheduler = make_scheduler("Euler", "Uniform", base)
    assert scheduler.config.use_karras_sigmas is False
    assert scheduler.config.timestep_spacing == "linspace"
    set_timesteps(scheduler, 10)
    assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 0


def test_ddim_schedule_is_a1111s() -> None:
    """A1111's ddim schedule: timesteps 1, 1 + 1000 // N, ... (the original DDIM/PLMS ones)."""
    for sampler in ("Euler", "DDIM", "PLMS"):
        scheduler = make_scheduler(sampler, "DDIM", BASES["sdxl"])
        set_timesteps(scheduler, 20)
        assert sorted(set(int(t) for t in scheduler.timesteps)) == list(range(1, 1000, 50))


def test_ddim_does_not_clip_latents() -> None:
    """diffusers' DDIM defaults clip_sample=True, which the SD1 (PNDM) config does not override."""
    scheduler = make_scheduler("DDIM", None, BASES["sd1"])
    assert scheduler.config.clip_sample is False and scheduler.config.set_alpha_to_one is False


def test_fresh_object_per_call() -> None:
    a = make_scheduler("DPM++ 2M", "Karras", BASES["sd1"])
    b = make_scheduler("DPM++ 2M", "Karras", BASES["sd1"])
    assert a is not b
    set_timesteps(a, 20)
    x = _sample()
    a.step(torch.zeros_like(x), a.timesteps[0], x)
    assert a.step_index == 1
    assert b.step_index is None and b.num_inference_steps is None


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_training_config_is_kept(sampler: str) -> None:
    base = {**_base("sd2-v"), "beta_end": 0.013}
    assert base["prediction_type"] == "v_prediction"
    reference = diffusers.DDPMScheduler.from_config(base)
    scheduler = make_scheduler(sampler, None, base, noise_seeds=[1])
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_end == 0.013 and scheduler.config.num_train_timesteps == 1000
    torch.testing.assert_close(scheduler.alphas_cumprod, reference.alphas_cumprod)


def test_zero_terminal_snr_models_refuse_samplers_that_cannot_run_them() -> None:
    base = {**BASES["sdxl"], "rescale_betas_zero_snr": True}
    assert make_scheduler("Euler", None, base).config.rescale_betas_zero_snr is True
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        make_scheduler("Heun", None, base)


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("DPM++ 2M", None, ("DPM++ 2M", "Karras")),
        ("DPM++ 2M", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M", "automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential")),
        ("DPM++ SDE Karras", None, ("DPM++ SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M SDE Karras", "Karras", ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE", None, ("DPM++ 2M SDE", "Exponential")),
        ("DPM2 a Karras", None, ("DPM2 a", "Karras")),
        ("LMS Karras", "Automatic", ("LMS", "Karras")),
        ("Euler a", None, ("Euler a", "Uniform")),
        ("Euler", None, ("Euler", "Uniform")),
        ("Euler", "SGMUniform", ("Euler", "SGM Uniform")),
        ("Euler", "sgm_uniform", ("Euler", "SGM Uniform")),
        ("Euler SGM Uniform", None, ("Euler", "SGM Uniform")),
        ("k_euler_a", None, ("Euler a", "Uniform")),
        ("k_euler_ancestral", None, ("Euler a", "Uniform")),
        ("k_dpmpp_2m", None, ("DPM++ 2M", "Karras")),
        ("k_dpmpp_2m_ka", None, ("DPM++ 2M", "Karras")),
        ("k_lms_ka", None, ("LMS", "Karras")),
        ("k_dpmpp_2m_sde_exp", None, ("DPM++ 2M SDE", "Exponential")),
        ("dpm++ 2m karras", None, ("DPM++ 2M", "Karras")),
        ("EULER A", None, ("Euler a", "Uniform")),
        ("ddim", None, ("DDIM", "DDIM")),
        ("PLMS", None, ("PLMS", "DDIM")),
        ("UniPC", None, ("UniPC", "SGM Uniform")),
        ("LCM", None, ("LCM", "Automatic")),
        ("LCM", "Automatic", ("LCM", "Automatic")),
        ("DEIS", "Karras", ("DEIS", "Karras")),
    ],
)
def test_resolve(name: str, schedule: str | None, expected: tuple[str, str]) -> None:
    info, label = resolve(name, schedule)
    assert (info.name, label) == expected


def test_exact_case_wins_over_folded() -> None:
    assert resolve("Euler a")[0].name == "Euler a"
    assert resolve("Euler")[0].name == "Euler"


def test_unknown_sampler_lists_the_valid_names() -> None:
    with pytest.raises(UnknownSampler) as e:
        resolve("Euler b")
    assert e.value.field == "sampler_name"
    assert isinstance(e.value, ValueError)
    for s in SAMPLERS:
        assert s.name in str(e.value)


def test_unsupported_schedule_lists_the_sampler_s_schedules() -> None:
    with pytest.raises(UnknownSampler) as e:
        resolve("LMS", "Polyexponential")
    assert e.value.field == "scheduler"
    assert "valid are Uniform, Karras, Exponential, SGM Uniform, DDIM, Beta" in str(e.value)
    with pytest.raises(UnknownSampler, match="unknown schedule type 'Karras Exponential'"):
        resolve("Euler", "Karras Exponential")
    with pytest.raises(UnknownSampler, match="not supported by UniPC"):
        resolve("UniPC", "Uniform")
    with pytest.raises(UnknownSampler, match="not supported by DPM fast"):
        resolve("DPM fast", "Karras")


def test_combined_name_and_a_different_schedule_conflict() -> None:
    with pytest.raises(UnknownSampler, match="conflicts"):
        resolve("DPM++ 2M Karras", "Exponential")


def test_make_scheduler_classes() -> None:
    cases = {
        ("DPM++ 2M", None): (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        ),
        ("DPM++ 2M SDE", None): (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": True},
        ),
        ("Euler a", None): ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
        ("PLMS", None): ("PNDMScheduler", {"skip_prk_steps": True}),
        ("LMS", "Beta"): ("LMSDiscreteScheduler", {"use_beta_sigmas": True}),
    }
    for (name, schedule), want in cases.items():
        scheduler = make_scheduler(name, schedule, BASES["sd1"])
        assert type(scheduler).__name__ == want[0]
        for key, value in want[1].items():
            assert scheduler.config[key] == value


def test_brownian_sampler_needs_noise_seeds() -> None:
    with pytest.raises(ValueError, match="noise_seeds"):
        make_scheduler("DPM++ SDE", None, BASES["sd1"])
    scheduler = make_scheduler("DPM++ SDE", None, BASES["sd1"], noise_seeds=[5, 6])
    assert list(scheduler.config.noise_sampler_seed) == [5, 6]


def _per_image_inputs(seeds: list[int]) -> torch.Tensor:
    return torch.stack([torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])


# DPM adaptive is left out: its step sizes come from the whole batch's error (as in A1111), so a batch's
# images share their steps (README, "Samplers and schedules"); tests/test_k_dpm_adaptive.py covers it.
@pytest.mark.parametrize(
    "sampler", [s.name for s in SAMPLERS if s.step_noise != "none" and s.name not in ADAPTIVE]
)
def test_stochastic_samplers_do_not_depend_on_batch_position(sampler: str) -> None:
    seeds = [11, 12, 13]
    steps = 20 if sampler == "Restart" else 8  # Restart restarts (adds noise) from 20 steps
    batch = make_scheduler(sampler, None, BASES["sd1"], noise_seeds=seeds)
    single = make_scheduler(sampler, None, BASES["sd1"], noise_seeds=seeds[1:2])
    out_batch = _run(batch, sampler, steps, _per_image_inputs(seeds), NoiseSource.for_seeds(SHAPE[1:], seeds))
    out_single = _run(
        single, sampler, steps, _per_image_inputs(seeds[1:2]), NoiseSource.for_seeds(SHAPE[1:], seeds[1:2])
    )
    torch.testing.assert_close(out_batch[1:2], out_single, rtol=1e-5, atol=1e-5)
    other = _run(
        make_scheduler(sampler, None, BASES["sd1"], noise_seeds=[99]),
        sampler,
        steps,
        _per_image_inputs(seeds[1:2]),
        NoiseSource.for_seeds(SHAPE[1:], [99]),
    )
    assert not torch.allclose(other, out_single), "the step noise should depend on the seed"


def test_list_samplers_shape() -> None:
    items = list_samplers()
    assert [i["name"] for i in items] == [s.name for s in SAMPLERS]
    by_name = {i["name"]: i for i in items}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["DPM++ 2M"]["options"] == {"scheduler": "karras"}
    assert by_name["DPM++ 2M SDE"]["options"]["scheduler"] == "exponential"
    assert by_name["DPM++ SDE"]["options"]["brownian_noise"] == "True"
    assert by_name["Euler"]["options"] == {}
    for item in items:
        assert set(item) == {"name", "aliases", "options"}
        assert all(isinstance(v, str) for v in item["options"].values())
    json.dumps(items)


def test_list_schedulers_shape() -> None:
    items = list_schedulers()
    assert [i["name"] for i in items] == [
        "automatic",
        "uniform",
        "karras",
        "exponential",
        "polyexponential",
        "sgm_uniform",
        "kl_optimal",
        "align_your_steps",
        "simple",
        "normal",
        "ddim",
        "beta",
    ]
    for item in items:
        assert set(item) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
    karras = next(i for i in items if i["name"] == "karras")
    assert karras["label"] == "Karras" and karras["default_rho"] == 7.0
    json.dumps(items)
    labels = {s.label for s in SCHEDULE_TYPES}
    for s in SAMPLERS:
        assert set(s.schedules) <= labels
        assert s.default_schedule in s.schedules
