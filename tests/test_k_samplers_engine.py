"""Our sigma-space samplers and schedule types through `Engine.run` on the tiny SD1 model, the A1111 API
lists and infotext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.sampling.catalog import BUILTIN
from webui.core.sampling.samplers import SAMPLERS, UnknownSampler, list_samplers, list_schedulers
from webui.core.types import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.ui.params import from_infotext

BASE: dict[str, Any] = dict(
    prompt="a red apple", negative_prompt="blurry", checkpoint="tiny-sd1", width=64, height=64, steps=6
)
NEW_SAMPLERS = ["DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM++ 2S a", "DPM fast", "Restart", "DDIM CFG++"]
NEW_SCHEDULES = ["Polyexponential", "KL Optimal", "Align Your Steps", "Simple", "Normal"]


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs"), manager)


def _pixels(r: GenerationResult) -> list[np.ndarray]:
    return [np.asarray(i.image).astype(np.int16) for i in r.images]


def _run(engine: Engine, **kw: Any) -> GenerationResult:
    return engine.run(Txt2ImgRequest(**{**BASE, "seed": 7, "save_images": False, **kw}))


def _round_trips(r: GenerationResult, sampler: str, schedule: str | None) -> None:
    info = parse_infotext(r.images[0].infotext)
    name, label = BUILTIN.resolve(sampler, schedule)
    assert (info["Sampler"], info["Schedule type"]) == (name, label)
    fields = from_infotext(r.images[0].infotext)
    assert BUILTIN.resolve(fields["sampler_name"], fields["scheduler"]) == (name, label)


@pytest.mark.parametrize(("sampler", "schedule"), [*((s, None) for s in NEW_SAMPLERS), ("Euler a", "Karras")])
def test_each_new_sampler_generates_and_round_trips_infotext(
    engine: Engine, sampler: str, schedule: str | None
) -> None:
    r = _run(engine, sampler_name=sampler, scheduler=schedule)
    assert _pixels(r)[0].std() > 1, "a flat picture"
    _round_trips(r, sampler, schedule)


def test_each_new_schedule_type_changes_the_picture_and_round_trips(engine: Engine) -> None:
    runs = {s: _run(engine, sampler_name="Euler", scheduler=s) for s in ("Karras", *NEW_SCHEDULES)}
    distinct = {_pixels(r)[0].tobytes() for r in runs.values()}
    assert len(distinct) == len(runs)
    for label, r in runs.items():
        _round_trips(r, "Euler", label)
    again = _run(engine, sampler_name="Euler", scheduler="Align Your Steps")
    assert np.array_equal(_pixels(again)[0], _pixels(runs["Align Your Steps"])[0])


@pytest.mark.parametrize("sampler", ["DPM++ 3M SDE"])  # Restart: tests/test_samplers.py (20 steps)
def test_stochastic_new_samplers_depend_on_the_seed_not_the_batch_position(
    engine: Engine, sampler: str
) -> None:
    steps = 20 if sampler == "Restart" else 6  # Restart restarts from 20 steps
    batch = _pixels(_run(engine, sampler_name=sampler, seed=30, batch_size=2, steps=steps))
    single = _pixels(_run(engine, sampler_name=sampler, seed=31, steps=steps))[0]
    assert np.abs(batch[1] - single).max() <= 1
    deterministic = _pixels(_run(engine, sampler_name=sampler, seed=31, steps=steps, eta=0.0))[0]
    if sampler != "Restart":  # eta 0 turns the SDE/ancestral noise off
        assert not np.array_equal(deterministic, single)


def test_ddim_cfgpp_uses_the_unconditional_prediction_even_at_cfg_1(engine: Engine) -> None:
    a = _pixels(_run(engine, sampler_name="DDIM CFG++", cfg_scale=1.0))[0]
    b = _pixels(_run(engine, sampler_name="DDIM CFG++", cfg_scale=1.0, negative_prompt="green"))[0]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("sampler", ["DPM++ 2S a", "DPM fast"])
def test_img2img_and_inpaint_with_the_new_samplers(engine: Engine, sampler: str) -> None:
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    common = dict(BASE, seed=3, sampler_name=sampler, init_images=(init,), save_images=False)
    half = engine.run(Img2ImgRequest(**common, denoising_strength=0.5))
    more = engine.run(Img2ImgRequest(**common, denoising_strength=0.9))
    assert not np.array_equal(_pixels(half)[0], _pixels(more)[0]), "the strength must matter"
    inpaint = engine.run(Img2ImgRequest(**common, denoising_strength=0.75, mask=mask, mask_blur=0))
    out = _pixels(inpaint)[0]
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep].astype(np.int16))
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])


def test_a_schedule_the_sampler_lacks_is_a_request_error_naming_the_field(engine: Engine) -> None:
    with pytest.raises(RequestError) as e:
        _run(engine, sampler_name="DPM fast", scheduler="Karras")
    assert "scheduler" in str(e.value) or getattr(e.value, "field", None) == "scheduler"


def test_api_lists_name_every_a1111_sampler_and_schedule_type() -> None:
    a1111 = {"DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
             "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
             "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"}  # fmt: skip
    names = {s["name"] for s in list_samplers()}
    missing = a1111 - names
    assert not missing, missing
    aliases = {s["name"]: s["aliases"] for s in list_samplers()}
    assert aliases["DPM++ 3M SDE"] == ["k_dpmpp_3m_sde"] and aliases["DPM fast"] == ["k_dpm_fast"]
    assert aliases["Restart"] == ["restart"] and aliases["DDIM CFG++"] == ["ddim_cfgpp"]
    assert aliases["DPM++ 2M SDE Heun"] == ["k_dpmpp_2m_sde_heun"]
    options = {s["name"]: s["options"] for s in list_samplers()}
    assert options["DPM++ 3M SDE"]["scheduler"] == "exponential"
    assert options["DPM++ 2S a"]["second_order"] == "True" and options["Restart"]["scheduler"] == "karras"
    labels = [s["label"] for s in list_schedulers()]
    assert labels == ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
                      "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]  # fmt: skip
    offered = {label for s in SAMPLERS for label in s.schedules}
    assert set(labels) <= offered


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("k_dpmpp_3m_sde_ka", ("DPM++ 3M SDE", "Karras")),
        ("DPM++ 3M SDE Exponential", ("DPM++ 3M SDE", "Exponential")),
        ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "Karras")),
        ("k_dpmpp_2m_sde_heun_exp", ("DPM++ 2M SDE Heun", "Exponential")),
        ("Euler Align Your Steps", ("Euler", "Align Your Steps")),
        ("k_dpm_fast", ("DPM fast", "Automatic")),
        ("ddim_cfgpp", ("DDIM CFG++", "DDIM")),
    ],
)
def test_old_combined_names_and_aliases(name: str, expected: tuple[str, str]) -> None:
    assert BUILTIN.resolve(name) == expected


def test_flow_models_run_their_own_samplers_and_refuse_the_rest() -> None:
    """SD3/Flux run the flow samplers (flow_samplers.FLOW_SAMPLERS); the sigma-space ones are refused."""
    assert BUILTIN.resolve_for(True, "DPM++ 3M SDE") == ("DPM++ 3M SDE", "Simple")
    for sampler in ("Restart", "DPM fast", "DDIM CFG++", "DPM++ 2S a", "DPM++ 2M SDE Heun"):
        with pytest.raises(UnknownSampler) as e:
            BUILTIN.resolve_for(True, sampler)
        assert e.value.field == "sampler_name" and "cannot run flow-matching models" in str(e.value)
    with pytest.raises(UnknownSampler) as e:
        BUILTIN.resolve_for(True, "Euler", "Align Your Steps")
    assert e.value.field == "scheduler"
