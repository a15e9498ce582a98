"""The Ray flags without a cluster: --ray / --ray-local / --ray-threads / --ray-insecure parsed into the
server's options or refused, a non-loopback cluster refused without token auth or --ray-insecure, an
address that does not answer and a missing Ray failing the start with a clear message, and launch.py
installing requirements-ray.txt only when asked. (The cluster itself: tests/test_ray_workers.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from webui.core.jobs.ray_pool import INSTALL_HINT, RayCluster, RayOptions, RaySetupError, check_address
from webui.flags import FlagError, build_parser, parse_flags
from webui.server import build_options

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )


def test_the_flags_become_the_servers_ray_options() -> None:
    local = build_options(parse_flags(["--ray-local", "2", "--ray-threads", "1"]))
    assert local.ray == RayOptions(address=None, local=2, threads=1, insecure=False) and local.ray.enabled
    joined = build_options(parse_flags(["--ray", "10.0.0.5:6379", "--ray-insecure"]))
    assert joined.ray == RayOptions(address="10.0.0.5:6379", local=0, threads=0, insecure=True)
    assert build_options(parse_flags([])).ray is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ray", "auto", "--ray-local", "2"], "choose one"),
        (["--ray-local", "0"], "1 or more"),
        (["--ray-threads", "2"], "needs --ray or --ray-local"),
        (["--ray-local", "2", "--ray-threads", "0"], "1 or more"),
        (["--ray-insecure"], "only with --ray ADDRESS"),
        (["--ray-local", "1", "--ray-insecure"], "only with --ray ADDRESS"),
        (["--ray-local", "2", "--workers", "2"], "--workers and --device-ids"),
        (["--ray", "auto", "--device-ids", "0"], "--workers and --device-ids"),
        (["--ray", " "], "address"),
    ],
)
def test_ray_flags_that_would_do_nothing_or_clash_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_the_help_lists_every_ray_flag() -> None:
    text = build_parser().format_help()
    for flag in ("--ray ADDRESS", "--ray-local N", "--ray-threads N", "--ray-insecure"):
        assert flag in text


@pytest.mark.parametrize(
    "address",
    ["auto", "127.0.0.1:6379", "localhost:6379", "[::1]:6379", "ray://127.0.0.1:10001", "127.1.2.3:1"],
)
def test_loopback_addresses_need_no_token(address: str) -> None:
    check_address(address, insecure=False, env={})


@pytest.mark.parametrize(
    "address", ["10.0.0.5:6379", "ray://192.168.1.9:10001", "head.lan:6379", "[fd00::1]:6379"]
)
def test_a_lan_address_needs_token_auth_or_the_insecure_flag(address: str) -> None:
    with pytest.raises(RaySetupError) as refused:
        check_address(address, insecure=False, env={})
    assert "--ray-insecure" in str(refused.value) and "RAY_AUTH_MODE=token" in str(refused.value)
    assert address in str(refused.value)
    check_address(address, insecure=True, env={})
    check_address(address, insecure=False, env={"RAY_AUTH_MODE": "token"})
    with pytest.raises(RaySetupError):
        check_address(address, insecure=False, env={"RAY_AUTH_MODE": "disabled"})


def test_joining_a_lan_cluster_is_refused_before_any_connection() -> None:
    with pytest.raises(RaySetupError, match="--ray-insecure"):
        RayCluster.connect("10.255.255.1:6379")  # refused by the check: no packet is sent


def test_launch_installs_ray_only_when_a_ray_flag_asks_for_it() -> None:
    assert [p.name for p in launch.requirement_files(parse_flags([]))] == ["requirements.txt"]
    for argv in (["--ray-local", "1"], ["--ray", "auto"]):
        names = [p.name for p in launch.requirement_files(parse_flags(argv))]
        assert names == ["requirements.txt", "requirements-ray.txt"]
    assert (ROOT / "requirements-ray.txt").read_text().count("ray==") == 1
    assert "-r requirements-ray.txt" in (ROOT / "requirements-test.txt").read_text().splitlines()


def test_an_address_that_does_not_answer_stops_the_server_before_it_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["--skip-install", "--nowebui", "--data-dir", str(tmp_path), "--ray", f"127.0.0.1:{port}"]
    done = _run("", str(ROOT / "launch.py"), *argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--ray 127.0.0.1:{port}: the cluster does not answer" in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr


def test_a_lan_address_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    argv = ["--skip-install", "--nowebui", "--data-dir", str(tmp_path), "--ray", "10.255.255.1:6379"]
    done = _run("", str(ROOT / "launch.py"), *argv)
    assert done.returncode == 2 and "--ray-insecure" in done.stderr, done.stdout + done.stderr


def test_without_ray_installed_the_message_names_the_install_command() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if not installed: `import ray` raises ImportError
        "from webui.core.jobs.ray_pool import RayCluster, RaySetupError\n"
        "try:\n    RayCluster.start_local(num_cpus=1)\nexcept RaySetupError as e:\n    print('refused:', e)\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert "refused: Ray is not installed" in done.stdout and INSTALL_HINT in done.stdout


def test_a_local_cluster_is_refused_where_ray_was_imported_without_the_loopback_lock() -> None:
    code = (
        "import os; os.environ.pop('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', None)\n"
        "import ray\n"  # imported the plain way: Ray would listen on every interface
        "from webui.core.jobs.ray_pool import RayCluster, RaySetupError\n"
        "try:\n    RayCluster.start_local(num_cpus=1)\nexcept RaySetupError as e:\n    print('refused:', e)\n"
        "print('started:', ray.is_initialized())\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert "refused: --ray-local: Ray was imported" in done.stdout and "started: False" in done.stdout
