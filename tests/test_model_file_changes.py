"""A model file changed under a running server: rewritten in place, truncated, replaced. The server never
crashes (no SIGBUS from memory-mapped weights), notices the change and loads the new weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netguard import sitecustomize as netguard
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.checkpoint_file import CheckpointError
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.types import Txt2ImgRequest

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from pathlib import Path
from webui.core.config import AppConfig
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny, save_single_file
data = Path(sys.argv[1])
path = save_single_file(build_tiny("sd1", seed=0), data / "models" / "Stable-diffusion" / "m.safetensors")
manager = ModelManager(AppConfig.for_data_dir(data), Precision())
manager.refresh()
with manager.acquire("m") as loaded:
    unet = loaded.components.unet
with open(path, "r+b") as f:  # what `cp other.safetensors m.safetensors` does to the old bytes
    f.truncate(1000)
print("total", sum(float(t.float().sum()) for t in unet.state_dict().values()))
"""


def test_truncating_a_loaded_file_in_place_does_not_crash(tmp_path: Path) -> None:
    env = netguard.child_env(dict(os.environ, PYTHONPATH=str(ROOT)))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, f"exit {r.returncode} (SIGBUS is -7): {r.stderr[-1500:]}"
    assert "total" in r.stdout


def _request() -> Txt2ImgRequest:
    return Txt2ImgRequest(
        prompt="a cat", steps=3, width=64, height=64, seed=5, checkpoint="m", save_images=False
    )


def _rewrite_in_place(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "r+b") as dst:
        dst.truncate(0)
        shutil.copyfileobj(src, dst)


def test_a_file_rewritten_in_place_is_loaded_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    target = save_single_file(
        build_tiny("sd1", seed=0), data / "models" / "Stable-diffusion" / "m.safetensors"
    )
    other = save_single_file(build_tiny("sd1", seed=1), tmp_path / "other.safetensors")
    engine = Engine(AppConfig.for_data_dir(data))
    first = engine.run(_request())
    old_title = first.model_title
    stat = target.stat()
    _rewrite_in_place(other, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: make it visibly newer
    second = engine.run(_request())
    fresh = Engine(AppConfig.for_data_dir(data)).run(_request())
    assert second.images[0].image.tobytes() == fresh.images[0].image.tobytes()
    assert second.images[0].image.tobytes() != first.images[0].image.tobytes()
    assert second.model_title != old_title  # the hash was computed again
    assert len(engine.manager.cached()) == 1


def test_a_half_written_file_is_a_clear_error_then_loads_when_complete(tmp_path: Path) -> None:
    data = tmp_path / "data"
    target = save_single_file(
        build_tiny("sd1", seed=0), data / "models" / "Stable-diffusion" / "m.safetensors"
    )
    complete = target.read_bytes()
    engine = Engine(AppConfig.for_data_dir(data))
    engine.run(_request())
    with open(target, "r+b") as f:
        f.truncate(len(complete) // 2)
    with pytest.raises(CheckpointError, match="incomplete"):
        engine.run(_request())
    target.write_bytes(complete)
    assert engine.run(_request()).images


def test_a_default_checkpoint_that_cannot_load_is_passed_over_with_a_note(tmp_path: Path) -> None:
    from webui.core.models.components import Precision
    from webui.core.models.manager import ModelManager

    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    partial = save_single_file(build_tiny("sd1", seed=0), folder / "aaa-partial.safetensors")
    with open(partial, "r+b") as f:  # an interrupted download that sorts first
        f.truncate(partial.stat().st_size // 3)
    save_single_file(build_tiny("sd1", seed=1), folder / "bbb-good.safetensors")
    manager = ModelManager(AppConfig.for_data_dir(data), Precision())
    manager.refresh()
    assert manager.checkpoints()[0].name == "aaa-partial.safetensors"
    with manager.acquire(None) as loaded:
        assert loaded.file.name == "bbb-good.safetensors"
        assert len(loaded.notes) == 1
        assert (
            "aaa-partial.safetensors cannot be loaded" in loaded.notes[0] and "incomplete" in loaded.notes[0]
        )
        assert loaded.notes[0].endswith("using bbb-good.safetensors")
    with pytest.raises(CheckpointError, match="incomplete"), manager.acquire("aaa-partial"):
        pass
    with manager.acquire("bbb-good") as loaded:
        assert loaded.notes == ()


def test_the_engine_reports_a_passed_over_default_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    partial = save_single_file(build_tiny("sd1", seed=0), folder / "aaa-partial.safetensors")
    with open(partial, "r+b") as f:
        f.truncate(partial.stat().st_size // 3)
    save_single_file(build_tiny("sd1", seed=1), folder / "bbb-good.safetensors")
    result = Engine(AppConfig.for_data_dir(data)).run(
        Txt2ImgRequest(prompt="a cat", steps=2, width=64, height=64, save_images=False)
    )
    assert result.model_title.startswith("bbb-good.safetensors")
    assert any("aaa-partial.safetensors cannot be loaded" in w for w in result.warnings)
