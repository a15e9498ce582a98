"""LoRA through `Engine.run` on the tiny models: changes the image, weight 0 is no LoRA, nothing leaks.

Skipped until the engine applies networks (it imports `apply_networks` into webui.core.engine).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.networks.tiny import write_tiny_lora
from webui.core.outputs.infotext import parse_infotext
from webui.core.types import GenerationResult, Txt2ImgRequest


@pytest.fixture(scope="module")
def setup(
    tiny_data_dir: Path, tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AppConfig:
    tmp = tmp_path_factory.mktemp("lora-engine")
    loras = tmp / "Lora"
    for arch in ("sd1", "sdxl"):
        write_tiny_lora(loras / f"tiny-{arch}.safetensors", load_model(tiny_files[arch], Precision()), seed=7)
    return AppConfig.for_data_dir(
        tiny_data_dir, lora_dirs=(loras,), cache_dir=tmp / "cache", outputs_dir=tmp / "outputs"
    )


def _engine(config: AppConfig) -> Engine:
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


def _run(engine: Engine, prompt: str, checkpoint: str = "tiny-sd1") -> GenerationResult:
    request = Txt2ImgRequest(
        prompt=prompt, checkpoint=checkpoint, steps=2, width=64, height=64, seed=1, save_images=False
    )
    return engine.run(request)


def _pixels(result: GenerationResult) -> np.ndarray:
    return np.asarray(result.images[0].image)


def _short(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


def test_lora_changes_the_image_weight_zero_does_not_and_nothing_leaks(setup: AppConfig) -> None:
    engine = _engine(setup)
    plain = _pixels(_run(engine, "a red apple"))
    with_lora = _run(engine, "a red apple<lora:tiny-sd1:1>")
    assert not np.array_equal(_pixels(with_lora), plain)
    lora_file = setup.lora_dirs[0] / "tiny-sd1.safetensors"
    assert parse_infotext(with_lora.images[0].infotext)["Lora hashes"] == f"tiny-sd1: {_short(lora_file)}"
    assert np.array_equal(_pixels(_run(engine, "a red apple<lora:tiny-sd1:0>")), plain)
    assert np.array_equal(_pixels(_run(engine, "a red apple")), plain), "the LoRA leaked into the next job"
    assert np.array_equal(_pixels(_run(_engine(setup), "a red apple")), plain)  # as on a fresh start


def test_text_encoder_only_lora_does_not_poison_the_encoding_cache(setup: AppConfig) -> None:
    """Same text with and without a text-encoder LoRA: the cached encoding must not be shared."""
    engine = _engine(setup)
    plain = _pixels(_run(engine, "a red apple"))
    te_only = _pixels(_run(engine, "<lora:tiny-sd1:1:0>a red apple"))
    assert not np.array_equal(te_only, plain)
    assert np.array_equal(_pixels(_run(engine, "a red apple")), plain)


def test_unknown_and_foreign_loras_are_skipped_with_a_warning(setup: AppConfig) -> None:
    engine = _engine(setup)
    plain = _pixels(_run(engine, "a red apple", "tiny-sdxl"))
    foreign = _run(engine, "a red apple<lora:tiny-sd1:1><lora:nope:1>", "tiny-sdxl")
    assert np.array_equal(_pixels(foreign), plain)
    text = " | ".join(foreign.warnings)
    assert "'nope' not found" in text and "'tiny-sd1' skipped" in text
    assert not np.array_equal(_pixels(_run(engine, "a red apple<lora:tiny-sdxl:1>", "tiny-sdxl")), plain)
