"""Parity: our denoising loop computes what diffusers' own pipelines compute, for every sampler.

DESIGN.md's promise: with the same components, scheduler and seed, our loop's output matches diffusers'
`StableDiffusionPipeline` / `StableDiffusionXLPipeline`. Only the loop is compared, so both sides get
the same inputs:

- the same module objects (tiny models loaded by our loader: eval mode, fp32, CPU);
- a fresh scheduler from `make_scheduler` for each side, built the same way (DPM++ SDE's Brownian trees
  are seeded by `noise_seeds`, so two schedulers made with the same seeds draw the same noise);
- our prompt embeddings (`prompt_embeds`, `negative_prompt_embeds`, and for SDXL the pooled ones), so
  the pipeline's own prompt encoding (and SDXL's `force_zeros_for_empty_prompt`) never runs;
- our initial noise as `latents=` (the pipeline multiplies by `init_noise_sigma`, as we do);
- for step noise (Euler a, DPM2 a, DPM++ 2M SDE, LCM), `generator=` a list prepared exactly as ours:
  one CPU generator per image, advanced past the initial noise (`NoiseSource.for_seeds`);
- guidance scale = our cfg scale (7); 3 to 5 steps (see STEPS); 64x64 px (64x96 on the engine's path);
  a batch of two images with different seeds, prompts and negative prompts (a cond/uncond or image
  mix-up shows).

Two layouts of our loop are checked, each against the pipeline call that does the same arithmetic:

- the batched loop (`denoise(per_image=False)`: one UNet call for the whole batch) against one
  pipeline call for the batch of two: every registered (sampler, schedule type) on SD1 and SDXL, every
  sampler (default schedule) on SD2-v;
- the engine's path (`run_txt2img`, then one VAE decode per image, as `Engine` does: one UNet call per
  image, so a batch position equals a single run) against the pipeline run once per image (its UNet
  batch is then that image's [uncond, cond], as ours): every sampler on each of the three models;
- and `Engine.run` itself (its seeds, noise, generators and Brownian seeds) for two stochastic samplers.

The bound asserted is the issue's: at most 1/255 on the uint8 images, with the final latents close
too (a tiny random VAE could hide a latent difference). On the machine this was written on every
combination, in both layouts and for SD1, SD2 (v-prediction) and SDXL, is bit-identical: latents equal,
pixel difference 0; so no sampler needs an exception. (Our per-image layout against the pipeline's
batched call differs only by float rounding, up to 1/255: matrix kernels round differently for
different batch sizes.)

Workarounds for the pipelines: none needed with diffusers 0.42 / transformers 5.24. The SDXL pipeline is
built with `add_watermarker=False` (with invisible-watermark installed it would otherwise change the
pixels) and `force_zeros_for_empty_prompt=False` (irrelevant with embeddings passed, but our engine
encodes an empty negative prompt as text, as A1111 does, and never zeros it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Components, Precision
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.prompts.encode import Conditioning, encode_prompts
from webui.core.sampling.loop import denoise, step_kwargs
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import SAMPLERS, make_scheduler, resolve, set_timesteps
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.txt2img import run_txt2img, sdxl_time_ids
from webui.core.types import Txt2ImgRequest

CFG = 7.0
Size = tuple[int, int]  # (width, height)
GRID_SIZE: Size = (64, 64)
ENGINE_SIZE: Size = (64, 96)  # not square: a width/height mix-up (SDXL size ids, latents) shows
SEEDS = (1234, 98765)
PROMPTS = ("a lighthouse on a cliff at dusk", "a bowl of ramen, studio light")
NEGATIVES = ("", "blurry, low quality")
MAX_PIXEL_DIFF = 1  # of 255
LATENT_TOL = 1e-3

# Steps: few (the UNet dominates the cost), but enough for each solver to reach its highest order once:
# LMS is 4th order, PLMS 4th after 3 steps, UniPC (order 3, lower order final) needs 5; the rest reach
# order 2 (or are single-step) within 3.
STEPS: dict[str, int] = {"LMS": 4, "PLMS": 4, "UniPC": 5}
DEFAULT_STEPS = 3


def steps_for(sampler: str) -> int:
    return STEPS.get(sampler, DEFAULT_STEPS)


# The grid: every registered (sampler, schedule type) for SD1 and SDXL; SD2 (v-prediction): every sampler
# with its default schedule. Built from the registry, so a new sampler or schedule is covered on arrival.
# The scheduler code is the same in both of our UNet layouts, so the engine's per-image path is checked
# on every sampler (default schedule) of each model rather than on the whole grid again.
# Only what runs on diffusers: our own sigma-space samplers (KScheduler) have no diffusers pipeline to
# match; tests/test_k_samplers.py checks them against their update rules.
ALL = [(s.name, label) for s in SAMPLERS for label in s.schedules if not s.runs_own(label)]
DEFAULTS = [(s.name, s.default_schedule) for s in SAMPLERS if not s.runs_own(s.default_schedule)]
GRID = [("sd1", *c) for c in ALL] + [("sdxl", *c) for c in ALL] + [("sd2-v", *c) for c in DEFAULTS]
PER_SAMPLER = [(arch, *c) for arch in ("sd1", "sdxl", "sd2-v") for c in DEFAULTS]

# diffusers' schedulers trip NumPy 2 deprecations on every step (thousands per test; recording them
# costs time); torchsde warns about float32 rounding at the Brownian interval's ends.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have:UserWarning"),
]


def _case_id(case: tuple[str, str, str]) -> str:
    return "-".join(case).replace(" ", "_")


@dataclass(frozen=True)
class Model:
    parts: Components
    cond: Conditioning  # PROMPTS, one row per image
    uncond: Conditioning  # NEGATIVES


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


@pytest.fixture(scope="module")
def models(tiny_files: dict[str, Path]) -> dict[str, Model]:
    out = {}
    for arch in ("sd1", "sd2-v", "sdxl"):
        parts = load_model(tiny_files[arch], Precision())
        assert not parts.unet.training and not parts.vae.training
        out[arch] = Model(parts, encode_prompts(parts, PROMPTS), encode_prompts(parts, NEGATIVES))
    assert out["sd2-v"].parts.prediction_type == "v_prediction"
    return out


def _rows(c: Conditioning, i: int) -> Conditioning:
    return Conditioning(c.embeds[i : i + 1], None if c.pooled is None else c.pooled[i : i + 1])


_ORIGINALS: dict[tuple[str, str, str, tuple[int, ...]], Any] = {}


def fresh_scheduler(parts: Components, sampler: str, schedule: str, seeds: Sequence[int]) -> Any:
    """`make_scheduler(sampler, schedule, parts.scheduler_config, noise_seeds=seeds)` for one run.

    Some constructors are slow (DPM2's sets 1000 timesteps in a Python loop: ~0.1 s), so each distinct
    scheduler is made once and every run gets a deep copy of that never-used original, which is in the
    same state as a new one. The seeds only matter to the Brownian sampler (DPM++ SDE).
    """
    info, label = resolve(sampler, schedule)
    key = (parts.arch, info.name, label, tuple(seeds) if info.step_noise == "brownian" else ())
    if key not in _ORIGINALS:
        _ORIGINALS[key] = make_scheduler(sampler, schedule, parts.scheduler_config, noise_seeds=seeds)
    return copy.deepcopy(_ORIGINALS[key])


def _shape(size: Size) -> tuple[int, int, int]:
    return (4, size[1] // 8, size[0] // 8)


def _generators(size: Size, seeds: Sequence[int]) -> list[torch.Generator]:
    return NoiseSource.for_seeds(_shape(size), seeds).generator_list()


# ---- diffusers' side --------------------------------------------------------------------------------


def _pipeline(parts: Components, scheduler: Any) -> Any:
    common: dict[str, Any] = dict(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=scheduler,
    )
    pipe: Any
    if parts.text_encoder_2 is None:
        pipe = StableDiffusionPipeline(
            **common, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    else:
        pipe = StableDiffusionXLPipeline(
            **common,
            text_encoder_2=parts.text_encoder_2,
            tokenizer_2=parts.tokenizer_2,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_run(
    parts: Components,
    sampler: str,
    schedule: str,
    seeds: Sequence[int],
    cond: Conditioning,
    uncond: Conditioning,
    size: Size,
) -> tuple[torch.Tensor, list[Image.Image]]:
    """diffusers' pipeline on our embeddings and noise: (final latents, images)."""
    pipe = _pipeline(parts, fresh_scheduler(parts, sampler, schedule, seeds))
    extra: dict[str, Any] = {}
    if cond.pooled is not None:
        extra = dict(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
    final: dict[str, torch.Tensor] = {}

    def keep_latents(pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        final["latents"] = kw["latents"]
        return kw

    out = pipe(
        prompt_embeds=cond.embeds,
        negative_prompt_embeds=uncond.embeds,
        latents=initial_noise(_shape(size), seeds),
        generator=_generators(size, seeds),
        num_inference_steps=steps_for(sampler),
        guidance_scale=CFG,
        height=size[1],
        width=size[0],
        output_type="pil",
        callback_on_step_end=keep_latents,
        **extra,
    )
    return final["latents"], list(out.images)


def pipeline_per_image(
    model: Model, sampler: str, schedule: str, seeds: Sequence[int], size: Size
) -> tuple[torch.Tensor, list[Image.Image]]:
    """The pipeline run once per image (batch of one), results stacked."""
    runs = [
        pipeline_run(
            model.parts, sampler, schedule, [seed], _rows(model.cond, i), _rows(model.uncond, i), size
        )
        for i, seed in enumerate(seeds)
    ]
    return torch.cat([r[0] for r in runs]), [r[1][0] for r in runs]


# ---- our side ---------------------------------------------------------------------------------------


def engine_path(
    model: Model, sampler: str, schedule: str, size: Size
) -> tuple[torch.Tensor, list[Image.Image]]:
    """What Engine._sample_batch and _run_batches do: run_txt2img, then one VAE decode per image."""
    parts = model.parts
    scheduler = fresh_scheduler(parts, sampler, schedule, SEEDS)
    latents = run_txt2img(
        parts,
        scheduler,
        initial_noise(_shape(size), SEEDS),
        _generators(size, SEEDS),
        model.cond,
        model.uncond,
        steps=steps_for(sampler),
        cfg_scale=CFG,
        width=size[0],
        height=size[1],
    )
    images = torch.cat([decode(parts.vae, latents[i : i + 1]) for i in range(len(SEEDS))])
    return latents, to_pil(images)


def batched_loop(
    model: Model, sampler: str, schedule: str, size: Size
) -> tuple[torch.Tensor, list[Image.Image]]:
    """run_txt2img's set-up, with the loop's batched layout (one UNet call for the batch)."""
    parts = model.parts
    scheduler = fresh_scheduler(parts, sampler, schedule, SEEDS)
    set_timesteps(scheduler, steps_for(sampler), parts.unet.device)
    latents = denoise(
        parts.unet,
        scheduler,
        initial_noise(_shape(size), SEEDS) * scheduler.init_noise_sigma,
        model.cond,
        model.uncond,
        CFG,
        time_ids=sdxl_time_ids(*size) if model.cond.pooled is not None else None,
        extra_step=step_kwargs(scheduler, _generators(size, SEEDS), None),
        per_image=False,
    )
    return latents, to_pil(decode(parts.vae, latents))


# ---- comparing --------------------------------------------------------------------------------------


def pixel_diff(a: Sequence[Image.Image], b: Sequence[Image.Image]) -> int:
    assert len(a) == len(b) == len(SEEDS)
    return max(
        int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max())
        for x, y in zip(a, b, strict=True)
    )


def assert_parity(
    ours: tuple[torch.Tensor, list[Image.Image]], theirs: tuple[torch.Tensor, list[Image.Image]], what: str
) -> None:
    latent_diff = (ours[0] - theirs[0]).abs().max().item()
    pixels = pixel_diff(ours[1], theirs[1])
    detail = f"{what}: max pixel difference {pixels}/255, max latent difference {latent_diff:.3g}"
    assert pixels <= MAX_PIXEL_DIFF, detail
    torch.testing.assert_close(ours[0], theirs[0], rtol=LATENT_TOL, atol=LATENT_TOL, msg=detail)


@pytest.mark.parametrize("case", GRID, ids=_case_id)
def test_batched_loop_matches_pipeline(case: tuple[str, str, str], models: dict[str, Model]) -> None:
    arch, sampler, schedule = case
    model = models[arch]
    theirs = pipeline_run(model.parts, sampler, schedule, SEEDS, model.cond, model.uncond, GRID_SIZE)
    assert_parity(
        batched_loop(model, sampler, schedule, GRID_SIZE), theirs, "batched loop vs pipeline (batch of 2)"
    )


@pytest.mark.parametrize("case", PER_SAMPLER, ids=_case_id)
def test_engine_path_matches_pipeline(case: tuple[str, str, str], models: dict[str, Model]) -> None:
    arch, sampler, schedule = case
    model = models[arch]
    theirs = pipeline_per_image(model, sampler, schedule, SEEDS, ENGINE_SIZE)
    assert_parity(
        engine_path(model, sampler, schedule, ENGINE_SIZE), theirs, "engine path vs pipeline (once per image)"
    )


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE"])  # generator noise; Brownian tree
def test_engine_run_matches_pipeline(sampler: str, tiny_data_dir: Path, tmp_path: Path) -> None:
    """Engine.run itself (its seeds, noise, generators, scheduler and decode wiring), batch of two."""
    manager = ModelManager(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path), Precision())
    manager.refresh()
    request = Txt2ImgRequest(
        prompt=PROMPTS[0], negative_prompt=NEGATIVES[1], checkpoint="tiny-sd1", sampler_name=sampler,
        scheduler="Karras" if sampler == "DPM++ SDE" else "Automatic", seed=SEEDS[0], batch_size=2,
        steps=steps_for(sampler), cfg_scale=CFG, width=ENGINE_SIZE[0], height=ENGINE_SIZE[1],
        save_images=False,
    )  # fmt: skip
    result = Engine(manager.config, manager).run(request)
    seeds = [SEEDS[0], SEEDS[0] + 1]
    assert result.seeds == seeds
    with manager.acquire("tiny-sd1") as loaded:
        parts = loaded.components
        cond = encode_prompts(parts, [request.prompt])  # the engine encodes once and repeats
        uncond = encode_prompts(parts, [request.negative_prompt])
        _, label = resolve(sampler, request.scheduler)
        theirs = [pipeline_run(parts, sampler, label, [s], cond, uncond, ENGINE_SIZE)[1][0] for s in seeds]
    diff = pixel_diff([i.image for i in result.images], theirs)
    assert diff <= MAX_PIXEL_DIFF, f"Engine.run vs pipeline: max pixel difference {diff}/255"


def test_every_registered_combination_is_compared() -> None:
    for arch in ("sd1", "sdxl"):
        assert sorted((s, label) for a, s, label in GRID if a == arch) == sorted(ALL)
    for arch in ("sd1", "sdxl", "sd2-v"):
        assert sorted(s for a, s, _ in PER_SAMPLER if a == arch) == sorted(n for n, _ in DEFAULTS)
    assert {s for a, s, _ in GRID if a == "sd2-v"} == {n for n, _ in DEFAULTS}
    assert len(ALL) == sum(len([x for x in s.schedules if not s.runs_own(x)]) for s in SAMPLERS)
