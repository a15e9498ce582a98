"""`python launch.py` as a user runs it (inside the already-built venv: --skip-install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from webui import offline

ROOT = Path(__file__).resolve().parent.parent


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    offline.apply(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--skip-install", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_demo_model_is_written_into_data_dir_and_listed(tmp_path: Path) -> None:
    r = _launch("--data-dir", str(tmp_path), "--demo-model")
    assert r.returncode == 0, r.stderr
    demo = tmp_path / "models" / "Stable-diffusion" / "sfumato-demo-tiny-random-sd1.safetensors"
    assert demo.is_file()
    assert "sfumato-demo-tiny-random-sd1.safetensors [" in r.stdout  # listed with its hash


def test_empty_data_dir_says_what_to_do(tmp_path: Path) -> None:
    r = _launch("--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "No checkpoints found" in r.stdout and "--demo-model" in r.stdout and "--data-dir" in r.stdout
    assert "does not exist" in r.stderr  # the missing models folder is reported, not fatal
