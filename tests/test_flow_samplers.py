"""Flow-matching samplers on a tiny SD3 through diffusers' own pipeline, and Flux dev's dynamic shift."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.models.tiny_flow import build_tiny_flow, save_diffusers, scheduler_config
from webui.core.sampling.flow_samplers import FLOW_SAMPLERS, dynamic_mu, make_flow_scheduler

COMBOS = [(s.name, label) for s in FLOW_SAMPLERS for label in s.schedules if label != "Automatic"]


@pytest.fixture(scope="module")
def sd3_pipe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from diffusers import StableDiffusion3Pipeline

    folder = save_diffusers(build_tiny_flow("sd3", seed=5), tmp_path_factory.mktemp("sd3") / "sd3")
    return StableDiffusion3Pipeline.from_pretrained(str(folder), local_files_only=True)


def _draw(pipe: Any, steps: int = 4) -> torch.Tensor:
    return pipe(
        "a lighthouse",
        num_inference_steps=steps,
        height=64,
        width=64,
        output_type="pt",
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(1),
    ).images


def test_euler_automatic_is_the_models_own_schedule(sd3_pipe: Any) -> None:
    own = _draw(sd3_pipe)
    default = sd3_pipe.scheduler
    try:
        sd3_pipe.scheduler = make_flow_scheduler("Euler", None, scheduler_config("sd3"), 16, 4).scheduler
        assert torch.equal(_draw(sd3_pipe), own)
    finally:
        sd3_pipe.scheduler = default


@pytest.mark.parametrize(("sampler", "schedule"), COMBOS)
def test_every_sampler_and_schedule_runs(sd3_pipe: Any, sampler: str, schedule: str) -> None:
    default = sd3_pipe.scheduler
    reference = _draw(sd3_pipe)
    try:
        sd3_pipe.scheduler = make_flow_scheduler(sampler, schedule, scheduler_config("sd3"), 16, 4).scheduler
        image = _draw(sd3_pipe)
    finally:
        sd3_pipe.scheduler = default
    assert torch.isfinite(image).all() and image.std() > 0.01
    if (sampler, schedule) != ("Euler", "Simple"):
        assert not torch.equal(image, reference)  # the choice reaches the result
    else:
        assert torch.equal(image, reference)


@pytest.mark.parametrize("size", [(512, 512), (1024, 1024), (1536, 1024)])
def test_flux_dev_shift_follows_the_image_size_as_its_pipeline_does(size: tuple[int, int]) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = scheduler_config("flux-dev")
    seq = (size[0] // 16) * (size[1] // 16)
    steps = 20
    ours = make_flow_scheduler("Euler", "Simple", config, seq, steps)
    ours.scheduler.set_timesteps(steps, **ours.timestep_kwargs)
    theirs = FlowMatchEulerDiscreteScheduler.from_config(config)
    theirs.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=calculate_shift(seq))
    assert torch.equal(ours.scheduler.sigmas, theirs.sigmas)
    # the multistep solvers get the same shift as a static flow_shift
    dpm = make_flow_scheduler("DPM++ 2M", "Simple", config, seq, steps).scheduler
    assert dpm.config.flow_shift == pytest.approx(math.exp(dynamic_mu(config, seq)))


def test_schnell_and_sd3_shifts_are_static() -> None:
    for family, shift in (("flux-schnell", 1.0), ("sd3", 3.0)):
        made = make_flow_scheduler("UniPC", "Karras", scheduler_config(family), 4096, 4)
        assert made.scheduler.config.flow_shift == shift and made.timestep_kwargs == {}
        assert made.scheduler.config.use_karras_sigmas


@pytest.mark.parametrize(
    ("sampler", "schedule", "words"),
    [
        ("DDIM", None, "cannot run flow-matching models"),
        ("PLMS", None, "valid: Euler, Euler a"),
        ("Heun", "Karras", "no 'Karras' schedule"),
    ],
)
def test_unsupported_choices_are_named(sampler: str, schedule: str | None, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make_flow_scheduler(sampler, schedule, scheduler_config("sd3"), 16, 4)


A1111_SAMPLERS = {
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
}


def test_names_are_a1111s_or_ours() -> None:
    from webui.core.sampling.samplers import sampler_names

    assert {s.name for s in FLOW_SAMPLERS} <= A1111_SAMPLERS | set(sampler_names())
