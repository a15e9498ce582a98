"""`python launch.py` as a user runs it (inside the already-built venv: --skip-install).

The app now serves until stopped: each test starts it on a free loopback port, waits for the
"Running on" line, checks what it printed (and that it answers), then stops it with Ctrl+C (SIGINT).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from webui import offline

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    offline.apply(env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _serve(*args: str, timeout: float = 300) -> tuple[int, str, str, dict[str, object]]:
    """Run launch.py until it says where it serves; GET /api/v1/health; stop it. (rc, out, err, health)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--skip-install", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    out: list[str] = []
    deadline = time.monotonic() + timeout
    health: dict[str, object] = {}
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("Running on "):
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).json()
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        out.append(rest or "")
        reader.join(10)
    return proc.returncode, "".join(out), "".join(err), health


def test_demo_model_is_written_into_data_dir_and_listed(tmp_path: Path) -> None:
    rc, out, err, health = _serve("--data-dir", str(tmp_path), "--demo-model")
    assert rc == 0, err
    demo = tmp_path / "models" / "Stable-diffusion" / "sfumato-demo-tiny-random-sd1.safetensors"
    assert demo.is_file()
    assert "sfumato-demo-tiny-random-sd1.safetensors [" in out  # listed with its hash
    assert "Running on http://127.0.0.1:" in out
    assert health.get("status") == "ok"


def test_empty_data_dir_says_what_to_do(tmp_path: Path) -> None:
    rc, out, err, health = _serve("--data-dir", str(tmp_path))
    assert rc == 0, err
    assert "No checkpoints found" in out and "--demo-model" in out and "--data-dir" in out
    assert "does not exist" in err  # the missing models folder is reported, not fatal
    assert health.get("status") == "ok"  # and the server still starts


def test_malformed_auth_is_a_clear_start_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--skip-install", "--data-dir", str(tmp_path),
         "--api-auth", "alice-without-password"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert r.returncode == 2
    assert "--api-auth" in r.stderr and "user:password" in r.stderr
