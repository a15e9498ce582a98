"""--medvram / --lowvram / --vram: from flags to each worker's VRAM mode, the automatic choice from free
GPU memory, and the note on a machine without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from webui.core.config import AppConfig
from webui.core.devices import (
    AUTO_MEDVRAM_GIB,
    AUTO_NONE_GIB,
    GiB,
    auto_vram,
    choose_precision,
    oom_advice,
    resolve_vram,
    worker_precisions,
)
from webui.core.models.manager import ModelManager
from webui.flags import FlagError, parse_flags

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("argv", "vram"),
    [([], "auto"), (["--medvram"], "medvram"), (["--lowvram"], "lowvram"), (["--vram", "none"], "none"),
     (["--vram", "lowvram", "--lowvram"], "lowvram")],
)  # fmt: skip
def test_flags_set_the_vram_mode(argv: list[str], vram: str) -> None:
    assert AppConfig.from_flags(parse_flags(argv)).vram == vram


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--medvram", "--lowvram"], "choose one"), (["--medvram", "--vram", "none"], "--vram none"),
     (["--vram", "high"], "--vram")],
)  # fmt: skip
def test_conflicting_vram_flags_are_refused(argv: list[str], needle: str) -> None:
    with pytest.raises(FlagError, match=needle):
        parse_flags(argv)


def test_auto_picks_from_free_memory_at_the_documented_thresholds() -> None:
    assert auto_vram(int(AUTO_NONE_GIB * GiB)) == "none"
    assert auto_vram(int(AUTO_NONE_GIB * GiB) - 1) == "medvram"
    assert auto_vram(int(AUTO_MEDVRAM_GIB * GiB)) == "medvram"
    assert auto_vram(int(AUTO_MEDVRAM_GIB * GiB) - 1) == "lowvram"
    assert auto_vram(None) == "none"  # cannot tell: whole models, as before
    mode, note = resolve_vram("auto", "cuda:1", lambda device: 8 * GiB if device == "cuda:1" else None)
    assert mode == "medvram" and note is not None and "8.0 GiB free" in note and "cuda:1" in note


def test_each_gpu_worker_gets_its_own_auto_mode(tmp_path: Path) -> None:
    free = {"cuda:0": 40 * GiB, "cuda:1": 4 * GiB, "cuda": 40 * GiB}
    config = AppConfig.for_data_dir(tmp_path, vram="auto")
    precisions = worker_precisions(config, None, 1, cuda_count=2, free=free.get)
    assert [(p.device, p.vram) for p in precisions] == [("cuda:0", "none"), ("cuda:1", "lowvram")]
    forced = AppConfig.for_data_dir(tmp_path, vram="medvram")
    assert {p.vram for p in worker_precisions(forced, None, 1, cuda_count=2, free=free.get)} == {"medvram"}


def test_without_a_gpu_the_flags_say_so_and_models_stay_whole_on_the_cpu(tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tmp_path, vram="lowvram")
    precision = choose_precision(config, cuda_available=False)
    assert (precision.device, precision.vram) == ("cpu", "none")
    mode, note = resolve_vram("lowvram", "cpu")
    assert mode == "none" and note is not None and "--lowvram" in note and "CPU" in note
    assert resolve_vram("auto", "cpu") == ("none", None)  # nothing asked, nothing to say
    assert ModelManager(config, precision).offloader is None


def test_a_gpu_precision_in_medvram_gets_an_offloader_that_loads_into_ram(tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tmp_path, vram="medvram")
    precision = choose_precision(config, cuda_available=True)
    assert (precision.device, precision.dtype, precision.vram) == ("cuda", torch.float16, "medvram")
    assert precision.storage.device == "cpu" and precision.storage.dtype == torch.float16
    manager = ModelManager(config, precision)
    assert manager.offloader is not None and manager.offloader.mode == "medvram"
    assert str(manager.offloader.compute) == "cuda" and manager.offloader.storage_device == "cpu"


def test_out_of_memory_advice_depends_on_the_mode() -> None:
    assert "--medvram" in oom_advice("none") and "--tiled-vae" in oom_advice("none")
    assert "--lowvram" in oom_advice("medvram") and "--medvram" not in oom_advice("medvram")
    assert "already --lowvram" in oom_advice("lowvram")


def test_the_generator_prints_the_cpu_note(tmp_path: Path) -> None:
    """`python -m webui.generate --lowvram` on this GPU-less machine: a clear note, then it runs."""
    from webui.core.models.demo import write_demo

    (tmp_path / "models").mkdir()
    demo = write_demo(tmp_path / "models", "sd1")
    args = [sys.executable, "-m", "webui.generate", "--data-dir", str(tmp_path), "--lowvram", "--steps", "1",
            "--width", "64", "--height", "64", "--checkpoint", demo.stem, "a cat"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "note: --lowvram: the models run on the CPU" in done.stderr
