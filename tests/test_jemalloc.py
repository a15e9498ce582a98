"""--jemalloc: the launcher re-executes itself with LD_PRELOAD naming the library (a real preload of a
stand-in library built here, seen in the new process's memory map), says so clearly when none is found,
and refuses a PATH that is not a file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

import launch
from webui import bootstrap, jemalloc
from webui.flags import FlagError, parse_flags

ROOT = Path(__file__).resolve().parent.parent


class Execed(Exception):
    def __init__(self, program: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.program, self.argv, self.env = program, list(argv), dict(env)


def _exec(program: str, argv: Sequence[str], env: Mapping[str, str]) -> object:
    raise Execed(program, argv, env)


def test_finds_the_library_in_the_system_folders(tmp_path: Path) -> None:
    assert jemalloc.find([str(tmp_path)]) is None
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    assert jemalloc.find([str(tmp_path / "none"), str(tmp_path)]) == tmp_path / "libjemalloc.so.2"


def test_re_executes_once_with_the_library_preloaded(tmp_path: Path) -> None:
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    with pytest.raises(Execed) as e:
        jemalloc.ensure("auto", ["/py", "launch.py", "--jemalloc"], {"LD_PRELOAD": "other.so"}, _exec,
                        [str(tmp_path)], "linux")  # fmt: skip
    assert e.value.program == "/py" and e.value.argv == ["/py", "launch.py", "--jemalloc"]
    assert e.value.env["LD_PRELOAD"] == f"{lib} other.so" and e.value.env[jemalloc.GUARD] == str(lib)
    # the re-executed process does not go round again
    note = jemalloc.ensure("auto", ["/py"], e.value.env, _exec, [str(tmp_path)], "linux")
    assert "preloaded but is not loaded" in note  # this test process has no jemalloc mapped


def test_no_library_is_a_clear_message_and_no_re_exec(tmp_path: Path) -> None:
    note = jemalloc.ensure("auto", ["/py"], {}, _exec, [str(tmp_path)], "linux")
    assert "no libjemalloc found" in note and "libjemalloc2" in note and "default allocator" in note
    assert "Linux only" in jemalloc.ensure("auto", ["/py"], {}, _exec, [str(tmp_path)], "darwin")


def test_flag_values(tmp_path: Path) -> None:
    assert parse_flags([]).jemalloc is None
    assert parse_flags(["--jemalloc"]).jemalloc == "auto"
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert parse_flags(["--jemalloc", str(lib)]).jemalloc == str(lib)
    with pytest.raises(FlagError, match="--jemalloc"):
        parse_flags(["--jemalloc", str(tmp_path / "missing.so")])


def test_launch_re_executes_itself_before_starting_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    monkeypatch.setattr(bootstrap, "running_in", lambda venv: True)
    monkeypatch.setattr(jemalloc.os, "execve", _exec)

    def started(*args: object) -> None:
        raise AssertionError("the app started without re-executing with jemalloc")

    monkeypatch.setattr(launch.offline, "apply", started)
    monkeypatch.delenv(jemalloc.GUARD, raising=False)
    argv = ["--jemalloc", str(lib), "--port", "7999"]
    with pytest.raises(Execed) as e:
        launch.main(argv)
    assert e.value.argv == [sys.executable, str(ROOT / "launch.py"), *argv]
    assert str(lib) in e.value.env["LD_PRELOAD"].split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("cc"), reason="Linux and cc")
def test_a_real_preload_maps_the_library_into_the_new_process(tmp_path: Path) -> None:
    """A stand-in libjemalloc.so.2 (an empty shared library: real jemalloc may not be installed) is
    preloaded by the re-execution; `python -m webui.jemalloc` then finds it in its own memory map."""
    src = tmp_path / "stub.c"
    src.write_text("int sfumato_stub_allocator(void) { return 1; }\n")
    lib = tmp_path / "libjemalloc.so.2"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", jemalloc.GUARD)}
    done = subprocess.run(
        [sys.executable, "-m", "webui.jemalloc", str(lib)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"jemalloc: using {lib}"
    without = subprocess.run(
        [sys.executable, "-c", "from webui import jemalloc; print(jemalloc.loaded())"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert without.stdout.strip() == "None"
