import subprocess
import sys
from pathlib import Path

import pytest

from webui.core.config import AppConfig
from webui.flags import FlagError, parse_flags

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_bind_loopback_on_7860() -> None:
    cfg = AppConfig.from_flags(parse_flags([]))
    assert cfg.host == "127.0.0.1"
    assert cfg.port == 7860
    assert cfg.hashing


def test_a1111_flags_keep_their_meaning(tmp_path: Path) -> None:
    ns = parse_flags(
        ["--listen", "--port", "7861", "--data-dir", str(tmp_path), "--ckpt-dir", str(tmp_path / "extra"),
         "--no-hashing", "--use-cpu", "all", "--no-half", "--api"]
    )  # fmt: skip
    cfg = AppConfig.from_flags(ns)
    assert cfg.host == "0.0.0.0"
    assert cfg.port == 7861
    assert cfg.data_dir == tmp_path.resolve()
    assert cfg.ckpt_dirs == (
        tmp_path.resolve() / "models" / "Stable-diffusion",
        (tmp_path / "extra").resolve(),
    )
    assert cfg.vae_dirs == (tmp_path.resolve() / "models" / "VAE",)
    assert not cfg.hashing and cfg.use_cpu and cfg.no_half and cfg.api


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lisen"], "--lisen"),
        (["--port", "99999"], "--port"),
        (["--port", "abc"], "--port"),
        (["--precision", "fp8"], "--precision"),
        (["--use-cpu", "gpu"], "--use-cpu"),
    ],
)
def test_bad_flags_are_named(argv: list[str], needle: str) -> None:
    with pytest.raises(FlagError, match=needle.replace("-", r"\-")):
        parse_flags(argv)


def test_launch_rejects_unknown_flag_before_installing_anything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--venv", str(venv), "--no-such-flag"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--no-such-flag" in r.stderr
    assert not venv.exists()


def test_launch_help_lists_flags_without_a_venv(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--venv", str(tmp_path / "v"), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0
    for flag in (
        "--listen",
        "--port",
        "--data-dir",
        "--ckpt-dir",
        "--no-hashing",
        "--demo-model",
        "--api-auth",
    ):
        assert flag in r.stdout
