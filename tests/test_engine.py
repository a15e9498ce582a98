"""The engine end to end on tiny models: seeds as A1111 users know them, saving, cancel, hooks, errors."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.core.config import AppConfig
from webui.core.engine import Engine, JobProgress
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.sampling.loop import CancelToken, HookPoint, StepState
from webui.core.types import GenerationResult, RequestError, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=6, cfg_scale=7.0)


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    out = tmp_path_factory.mktemp("outputs")
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    config = AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs")
    return Engine(config, manager)


def _pixels(result: GenerationResult) -> list[np.ndarray]:
    return [np.asarray(i.image) for i in result.images]


def _run(engine: Engine, **kw: object) -> GenerationResult:
    args: dict[str, object] = dict(
        prompt="a red apple", negative_prompt="blurry", checkpoint="tiny-sd1", **SMALL
    )
    args.update(kw)
    return engine.run(Txt2ImgRequest(**args))  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_batch_position_equals_single_run_and_repeats_are_identical(engine: Engine, sampler: str) -> None:
    batch = _run(engine, seed=100, batch_size=3, sampler_name=sampler, save_images=False)
    assert batch.seeds == [100, 101, 102]
    for i, seed in enumerate(batch.seeds):
        single = _run(engine, seed=seed, sampler_name=sampler, save_images=False)
        assert np.array_equal(_pixels(single)[0], _pixels(batch)[i]), f"image {i} differs from its single run"
    again = _run(engine, seed=100, batch_size=3, sampler_name=sampler, save_images=False)
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(batch), _pixels(again), strict=True))
    assert not np.array_equal(_pixels(batch)[0], _pixels(batch)[1])


def test_n_iter_continues_the_seed_sequence(engine: Engine) -> None:
    r = _run(engine, seed=5, batch_size=2, n_iter=2, save_images=False)
    assert r.seeds == [5, 6, 7, 8]
    assert np.array_equal(_pixels(r)[3], _pixels(_run(engine, seed=8, save_images=False))[0])


def test_random_seed_is_recorded_and_reproduces(engine: Engine) -> None:
    r = _run(engine, seed=-1, save_images=False)
    seed = r.seeds[0]
    assert 0 <= seed < 2**32
    assert parse_infotext(r.images[0].infotext)["Seed"] == str(seed)
    assert np.array_equal(_pixels(r)[0], _pixels(_run(engine, seed=seed, save_images=False))[0])


def test_variation_seed_interpolates_between_two_seeds(engine: Engine) -> None:
    plain = _pixels(_run(engine, seed=1, sampler_name="Euler", save_images=False))[0]
    other = _pixels(_run(engine, seed=2, sampler_name="Euler", save_images=False))[0]
    zero = _pixels(
        _run(engine, seed=1, subseed=2, subseed_strength=0.0, sampler_name="Euler", save_images=False)
    )
    full = _run(engine, seed=1, subseed=2, subseed_strength=1.0, sampler_name="Euler", save_images=False)
    half = _pixels(
        _run(engine, seed=1, subseed=2, subseed_strength=0.5, sampler_name="Euler", save_images=False)
    )
    assert np.array_equal(zero[0], plain)
    assert np.array_equal(_pixels(full)[0], other)  # Euler has no step noise: all noise is the subseed's
    assert not np.array_equal(half[0], plain) and not np.array_equal(half[0], other)
    info = parse_infotext(full.images[0].infotext)
    assert info["Variation seed"] == "2" and info["Variation seed strength"] == "1"


def test_resize_seed_from_keeps_the_composition_of_the_smaller_image(engine: Engine) -> None:
    r = _run(
        engine, seed=3, width=128, height=64, seed_resize_from_w=64, seed_resize_from_h=64, save_images=False
    )
    assert r.images[0].image.size == (128, 64)
    assert parse_infotext(r.images[0].infotext)["Seed resize from"] == "64x64"


def test_images_are_on_disk_with_infotext_before_they_are_returned(
    engine: Engine, manager: ModelManager
) -> None:
    r = _run(engine, seed=42, batch_size=2)
    assert [p.name for p in r.paths] == ["00000-42.png", "00001-43.png"]
    ckpt = manager.resolve("tiny-sd1").path
    shorthash = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    for img, path in zip(r.images, r.paths, strict=True):
        assert path.parent.parent.name == "txt2img-images"
        with Image.open(path) as saved:
            assert saved.info["parameters"] == img.infotext
            assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(img.image))
        info = parse_infotext(img.infotext)
        assert info["Prompt"] == "a red apple" and info["Negative prompt"] == "blurry"
        assert info["Model hash"] == shorthash and info["Model"] == "tiny-sd1"
        assert info["Sampler"] == "DPM++ 2M" and info["Schedule type"] == "Karras"
        assert info["Size"] == "64x64" and info["Steps"] == "6" and info["RNG"] == "CPU"


@pytest.mark.parametrize(
    "field, value",
    [
        ("width", 0),
        ("width", 100000),
        ("height", 65),
        ("steps", -1),
        ("steps", 10**6),
        ("cfg_scale", math.nan),
        ("cfg_scale", math.inf),
        ("sampler_name", "Euler Z"),
        ("scheduler", "Wobbly"),
        ("seed", 2**64),
        ("batch_size", 10**4),
        ("n_iter", 10**6),
        ("subseed_strength", 5.0),
        ("checkpoint", "no-such-model"),
    ],
)
def test_bad_requests_name_the_field_and_write_nothing(engine: Engine, field: str, value: object) -> None:
    with pytest.raises(RequestError) as e:
        _run(engine, **{field: value})
    assert e.value.field == field
    assert not engine.config.outputs_dir.exists()


def test_unknown_sampler_error_lists_valid_names(engine: Engine) -> None:
    with pytest.raises(RequestError, match="Euler a"):
        _run(engine, sampler_name="nope")


def test_interrupt_stops_within_a_step_and_keeps_finished_batches(engine: Engine) -> None:
    cancel = CancelToken()
    seen: list[JobProgress] = []

    def progress(p: JobProgress) -> None:
        seen.append(p)
        if p.batch == 2 and p.step == 2:
            cancel.interrupt()

    r = engine.run(
        Txt2ImgRequest(prompt="x", checkpoint="tiny-sd1", n_iter=3, seed=9, **SMALL),  # type: ignore[arg-type]
        progress=progress,
        cancel=cancel,
    )
    assert r.interrupted
    # batch 1 finished; batch 2 stopped at step 2 and its partly finished picture is kept (as A1111);
    # batch 3 never ran
    assert r.seeds == [9, 10]
    assert all(p is not None and p.is_file() for p in r.paths)
    assert max(p.step for p in seen if p.batch == 2) == 2
    assert "Seed: 10" in r.images[1].infotext
    whole = engine.run(
        Txt2ImgRequest(prompt="x", checkpoint="tiny-sd1", seed=10, save_images=False, **SMALL),  # type: ignore[arg-type]
    )
    partial, finished = (np.asarray(i.image, dtype=float) for i in (r.images[1], whole.images[0]))
    assert partial.shape == finished.shape and np.abs(partial - finished).max() > 0


def test_an_interrupt_for_a_shutdown_keeps_no_partial_picture(engine: Engine) -> None:
    cancel = CancelToken()

    def progress(p: JobProgress) -> None:
        if p.step == 2:
            cancel.interrupt(keep_partial=False)  # the queue re-runs the job after the restart

    r = engine.run(
        Txt2ImgRequest(prompt="x", checkpoint="tiny-sd1", seed=9, save_images=False, **SMALL),  # type: ignore[arg-type]
        progress=progress,
        cancel=cancel,
    )
    assert r.interrupted and r.images == ()


def test_skip_drops_the_current_batch_only(engine: Engine) -> None:
    cancel = CancelToken()

    def progress(p: JobProgress) -> None:
        if p.batch == 1 and p.step == 1:
            cancel.skip()

    r = engine.run(
        Txt2ImgRequest(prompt="x", checkpoint="tiny-sd1", n_iter=2, seed=20, save_images=False, **SMALL),  # type: ignore[arg-type]
        progress=progress,
        cancel=cancel,
    )
    assert not r.interrupted and r.seeds == [21]


def test_hooks_see_every_step_and_can_change_the_result(engine: Engine) -> None:
    calls: list[tuple[HookPoint, int]] = []

    def record(point: HookPoint, state: StepState) -> None:
        calls.append((point, state.step))

    def zero_guidance(point: HookPoint, state: StepState) -> None:
        if point is HookPoint.AFTER_CFG and state.noise_pred is not None:
            state.noise_pred = state.noise_pred * 0

    base = _pixels(_run(engine, seed=4, save_images=False))[0]
    hooked = engine.run(
        Txt2ImgRequest(prompt="a red apple", negative_prompt="blurry", checkpoint="tiny-sd1", seed=4,
                       save_images=False, **SMALL),  # type: ignore[arg-type]
        hooks=[record],
    )  # fmt: skip
    assert np.array_equal(_pixels(hooked)[0], base)  # observing changes nothing
    assert [c for c in calls if c[0] is HookPoint.AFTER_STEP] == [(HookPoint.AFTER_STEP, i) for i in range(6)]
    changed = engine.run(
        Txt2ImgRequest(prompt="a red apple", checkpoint="tiny-sd1", seed=4, save_images=False, **SMALL),  # type: ignore[arg-type]
        hooks=[zero_guidance],
    )
    assert not np.array_equal(_pixels(changed)[0], base)


def test_progress_reports_steps_eta_and_previews(engine: Engine) -> None:
    seen: list[JobProgress] = []
    engine.run(
        Txt2ImgRequest(prompt="x", checkpoint="tiny-sd1", seed=1, save_images=False, **SMALL),  # type: ignore[arg-type]
        progress=seen.append,
        preview_every=3,
    )
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(p.steps == 6 and p.eta >= 0 for p in seen)
    previews = [p.preview for p in seen if p.preview is not None]
    assert len(previews) == 2 and all(isinstance(i, Image.Image) and i.size == (8, 8) for i in previews)


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1-inpaint", "tiny-sd2-v", "tiny-sdxl"])
def test_every_architecture_generates(engine: Engine, checkpoint: str) -> None:
    r = _run(engine, checkpoint=checkpoint, seed=11, width=64, height=96, clip_skip=2)
    img = np.asarray(r.images[0].image)
    assert img.shape == (96, 64, 3) and img.std() > 0
    assert parse_infotext(r.images[0].infotext)["Clip skip"] == "2"


def test_variation_batch_keeps_the_seed_and_advances_the_subseed(engine: Engine) -> None:
    r = _run(engine, seed=30, subseed=70, subseed_strength=0.3, batch_size=2, save_images=False)
    assert r.seeds == [30, 30]
    assert [i.subseed for i in r.images] == [70, 71]
    assert not np.array_equal(_pixels(r)[0], _pixels(r)[1])


def test_a_run_of_several_images_also_saves_a_grid(engine: Engine) -> None:
    from webui.core.outputs.grid import grid_shape

    r = _run(engine, seed=50, batch_size=3, steps=2)
    assert r.grid_path is not None and r.grid_path.parent.parent.name == "txt2img-grids"
    with Image.open(r.grid_path) as grid:
        assert grid.size == (2 * 64, 2 * 64)  # 3 images: 2 rows of 2
        assert grid.info["parameters"] == r.images[0].infotext
        assert np.array_equal(np.asarray(grid.crop((64, 0, 128, 64)).convert("RGB")), _pixels(r)[1])
    assert grid_shape(1) == (1, 1) and grid_shape(4) == (2, 2) and grid_shape(5) == (2, 3)
    assert _run(engine, seed=50, steps=2).grid_path is None


def test_s_churn_reaches_euler(engine: Engine) -> None:
    plain = _pixels(_run(engine, seed=12, sampler_name="Euler", save_images=False))[0]
    churned = _pixels(
        _run(engine, seed=12, sampler_name="Euler", s_churn=1.0, s_tmin=0.0, s_tmax=100.0, save_images=False)
    )[0]
    assert not np.array_equal(plain, churned)
