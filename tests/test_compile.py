"""--compile: the flag reaches the engine, a real inductor compile of the tiny SD1 UNet gives the eager
pictures within 1/255 (one compile shared by this module's tests), and a compile that fails runs the job
eager with one warning."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.denoiser_compile import (
    CACHE_ENV,
    CompileMode,
    DenoiserCompiler,
    compile_cache_dir,
    compile_mode,
    use_cache_dir,
)
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import GenerationResult, Txt2ImgRequest
from webui.flags import parse_flags

REQUEST = Txt2ImgRequest(prompt="a red cube", steps=3, width=64, height=64, seed=11, save_images=False)


def _engine(data_dir: Path, tmp: Path, compile: bool) -> Engine:
    config = AppConfig.for_data_dir(
        data_dir, outputs_dir=tmp / "outputs", cache_dir=tmp / "cache", compile=compile
    )
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


def _pixels(result: GenerationResult) -> np.ndarray:
    return np.stack([np.asarray(i.image, dtype=np.int16) for i in result.images])


@pytest.fixture()
def own_cache_env() -> Iterator[None]:
    """The compiler sets TORCHINDUCTOR_CACHE_DIR for the process: start without it, put it back after."""
    saved = os.environ.pop(CACHE_ENV, None)
    yield
    os.environ.pop(CACHE_ENV, None)
    if saved is not None:
        os.environ[CACHE_ENV] = saved


def test_flag_reaches_the_config_and_the_engine(tiny_data_dir: Path, tmp_path: Path) -> None:
    assert AppConfig.from_flags(parse_flags(["--compile"])).compile is True
    assert AppConfig.from_flags(parse_flags([])).compile is False
    assert _engine(tiny_data_dir, tmp_path, compile=False).compiler is None
    compiler = _engine(tiny_data_dir, tmp_path, compile=True).compiler
    assert compiler is not None
    assert compiler.cache_dir == tmp_path / "cache" / "torch-compile" / f"torch-{torch.__version__}"


def test_cache_dir_is_set_only_when_the_user_has_not_chosen_one(tmp_path: Path, own_cache_env: None) -> None:
    mine = compile_cache_dir(tmp_path)
    assert use_cache_dir(mine) == mine and os.environ[CACHE_ENV] == str(mine) and mine.is_dir()
    os.environ[CACHE_ENV] = str(tmp_path / "users-own")
    assert use_cache_dir(compile_cache_dir(tmp_path / "other")) == tmp_path / "users-own"


def test_modes_per_device() -> None:
    assert compile_mode(torch.device("cpu"), "none", freeze=True) == CompileMode(
        None, {"freezing": True}, False
    )
    assert compile_mode(torch.device("cpu"), "none", freeze=False) == CompileMode(None, None, False)
    assert compile_mode(torch.device("cuda"), "none", freeze=True) == CompileMode(
        "reduce-overhead", None, True
    )
    assert compile_mode(torch.device("cuda"), "medvram", freeze=True) == CompileMode(None, None, False)
    assert isinstance(compile_mode(torch.device("cuda"), "lowvram", freeze=True), str)


def test_a_failing_compile_runs_eager_with_one_warning(
    tiny_data_dir: Path, tmp_path: Path, own_cache_env: None
) -> None:
    calls: list[dict[str, Any]] = []

    def broken_backend(gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise RuntimeError("no compiler on this machine")

    eager = _engine(tiny_data_dir, tmp_path / "eager", compile=False).run(REQUEST)
    engine = _engine(tiny_data_dir, tmp_path / "compiled", compile=True)
    engine.compiler = DenoiserCompiler(tmp_path / "cache", backend=broken_backend)
    result = engine.run(REQUEST)
    assert len(result.images) == 1 and not result.interrupted
    notes = [w for w in result.warnings if "--compile" in w]
    assert len(notes) == 1 and "no compiler on this machine" in notes[0] and "eager" in notes[0], (
        result.warnings
    )
    assert np.array_equal(_pixels(result), _pixels(eager))  # the eager module itself ran
    assert calls and calls[0].get("options") == {"freezing": True}  # CPU, no networks: frozen weights
    again = engine.run(REQUEST)  # not compiled again: the same single warning, no new attempt
    assert len(calls) == 1 and [w for w in again.warnings if "--compile" in w] == notes


@pytest.fixture(scope="module")
def compiled_runs(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real inductor compile (about a minute on a 2-core CPU), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("compile")
    saved = os.environ.pop(CACHE_ENV, None)
    try:
        engine = _engine(tiny_data_dir, tmp, compile=True)
        first = engine.run(REQUEST)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        second = engine.run(dataclasses.replace(REQUEST, seed=12))
        recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
        eager = _engine(tiny_data_dir, tmp / "eager", compile=False)
        yield {
            "first": first,
            "second": second,
            "recompiled": recompiled,
            "eager": [eager.run(REQUEST), eager.run(dataclasses.replace(REQUEST, seed=12))],
            "cache": tmp / "cache" / "torch-compile" / f"torch-{torch.__version__}",
            "env": os.environ.get(CACHE_ENV),
        }
    finally:
        os.environ.pop(CACHE_ENV, None)
        if saved is not None:
            os.environ[CACHE_ENV] = saved


@pytest.mark.slow
def test_compiled_pictures_match_eager_within_one_level(compiled_runs: dict[str, Any]) -> None:
    pairs = zip((compiled_runs["first"], compiled_runs["second"]), compiled_runs["eager"], strict=True)
    for compiled, eager in pairs:
        assert not [w for w in compiled.warnings if "--compile" in w], compiled.warnings
        diff = np.abs(_pixels(compiled) - _pixels(eager))
        assert diff.max() <= 1, diff.max()


@pytest.mark.slow
def test_compiled_code_is_cached_under_the_data_dir_and_reused(compiled_runs: dict[str, Any]) -> None:
    cache: Path = compiled_runs["cache"]
    assert compiled_runs["env"] == str(cache)
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))
    assert compiled_runs["recompiled"] == 0  # the same size again: no new graph


@pytest.mark.slow
def test_a_lora_job_gets_an_unfrozen_variant_that_sees_the_patched_weights(
    tiny_data_dir: Path, tiny_files: dict[str, Path], tmp_path: Path, own_cache_env: None
) -> None:
    """Frozen weights would keep the LoRA out: a job whose networks patch the UNet compiles (once) without
    freezing. A recording backend that runs dynamo's graph as it is stands in for inductor (cheap)."""
    from webui.core.models.loader import load_model
    from webui.core.networks.tiny import write_tiny_lora

    loras = tmp_path / "Lora"
    write_tiny_lora(loras / "tiny-sd1.safetensors", load_model(tiny_files["sd1"], Precision()), seed=7)
    options: list[Any] = []

    def graph_as_is(gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        options.append(kwargs.get("options"))
        return gm.forward

    def engine(compile: bool) -> Engine:
        config = AppConfig.for_data_dir(
            tiny_data_dir, lora_dirs=(loras,), cache_dir=tmp_path / "cache", outputs_dir=tmp_path / "out",
            compile=compile,
        )  # fmt: skip
        manager = ModelManager(config, Precision())
        manager.refresh()
        return Engine(config, manager)

    compiled, eager = engine(True), engine(False)
    compiled.compiler = DenoiserCompiler(tmp_path / "cache", backend=graph_as_is)
    lora = dataclasses.replace(REQUEST, prompt="a red cube <lora:tiny-sd1:1>")
    plain_run, lora_run = compiled.run(REQUEST), compiled.run(lora)
    assert options[0] == {"freezing": True} and options[-1] is None and len(options) >= 2, options
    assert not [w for w in plain_run.warnings + lora_run.warnings if "--compile" in w]
    with_lora, without = _pixels(eager.run(lora)), _pixels(eager.run(REQUEST))
    assert not np.array_equal(with_lora, without)  # the LoRA shows
    assert np.abs(_pixels(lora_run) - with_lora).max() <= 1
    assert np.abs(_pixels(plain_run) - without).max() <= 1
