"""`--batch-mode` (issue 17 item 1): on a GPU a batch goes through the denoiser in one call; image by
image on the CPU, where image i is then bit-identical to a single run. Batched mode is forced here on the
CPU: each image stays within 2/255 of its single run, and the model is called once per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.devices import per_image
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import GenerationResult, Txt2ImgRequest
from webui.flags import FlagError, build_parser

SMALL = dict(prompt="a red apple", negative_prompt="blurry", checkpoint="tiny-sd1", width=64, height=64,
             steps=4, save_images=False)  # fmt: skip


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    out = tmp_path_factory.mktemp("outputs")
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), Precision())
    m.refresh()
    return m


def _engine(manager: ModelManager, mode: str) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, batch_mode=mode), manager)


def _pixels(result: GenerationResult) -> list[np.ndarray]:
    return [np.asarray(i.image, dtype=np.int16) for i in result.images]


def _calls(manager: ModelManager, engine: Engine, request: Txt2ImgRequest) -> tuple[GenerationResult, int]:
    """The result and how many times the denoiser ran."""
    with manager.acquire("tiny-sd1") as model:
        denoiser = model.components.denoiser
    count = [0]
    handle = denoiser.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        return engine.run(request), count[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_batched_mode_matches_single_runs_within_2_of_255_in_one_call_per_step(
    manager: ModelManager, sampler: str
) -> None:
    batched = _engine(manager, "batched")
    batch, calls = _calls(
        manager, batched, Txt2ImgRequest(seed=300, batch_size=3, sampler_name=sampler, **SMALL)
    )
    assert calls == 4  # one call per step for the batch (uncond and cond rows together)
    for i, seed in enumerate(batch.seeds):
        single = batched.run(Txt2ImgRequest(seed=seed, sampler_name=sampler, **SMALL))
        assert np.abs(_pixels(single)[0] - _pixels(batch)[i]).max() <= 2, f"image {i}"
    assert np.abs(_pixels(batch)[0] - _pixels(batch)[1]).max() > 2  # the images differ


def test_per_image_mode_calls_the_model_per_image_and_is_bit_identical(manager: ModelManager) -> None:
    engine = _engine(manager, "per-image")
    batch, calls = _calls(manager, engine, Txt2ImgRequest(seed=300, batch_size=3, **SMALL))
    assert calls == 12
    single = engine.run(Txt2ImgRequest(seed=302, **SMALL))
    assert np.array_equal(_pixels(single)[0], _pixels(batch)[2])


def test_auto_batches_on_accelerators_only_and_the_flag_reaches_the_config(tmp_path: Path) -> None:
    assert per_image("auto", "cpu") and not per_image("auto", torch.device("cuda", 0))
    assert not per_image("auto", "mps") and per_image("per-image", "cuda") and not per_image("batched", "cpu")
    with pytest.raises(ValueError, match="batch mode"):
        per_image("sometimes", "cpu")
    ns = build_parser().parse_args(["--batch-mode", "batched", "--data-dir", str(tmp_path)])
    assert AppConfig.from_flags(ns).batch_mode == "batched"
    with pytest.raises(FlagError, match="batch-mode"):
        build_parser().parse_args(["--batch-mode", "sometimes"])
