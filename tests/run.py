"""The whole test suite from a bare machine: `python tests/run.py` (extra args go to pytest).

Creates/reuses .venv with requirements-test.txt, then runs ruff (lint and format), mypy over webui/core
and pytest, with every library kept offline. Exits non-zero if any step fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import bootstrap, offline  # noqa: E402  (stdlib-only modules)

CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> str | None:
    """Debian's Chromium for the browser tests: installed with apt-get when missing and running as root.
    Returns why it is unavailable (the browser tests then fail with that reason), or None."""
    if CHROMIUM.exists():
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"{CHROMIUM} is missing and this is not root: run `sudo apt-get install -y chromium`"
    print(f"== installing Chromium ({CHROMIUM} is missing)", flush=True)
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, check=False).returncode != 0:  # a bare machine may have no package lists yet
        subprocess.run(["apt-get", "update"], check=False)
        subprocess.run(cmd, check=False)
    if not CHROMIUM.exists():
        return "`apt-get install -y chromium` failed: the browser tests (tests/browser) will fail"
    return None


def main(argv: list[str]) -> int:
    venv_dir = Path(os.environ.get("SFUMATO_VENV", ROOT / ".venv"))
    python = str(bootstrap.ensure_venv(venv_dir, [ROOT / "requirements-test.txt"], quiet=True))
    env = dict(os.environ)
    offline.apply(env)
    steps = [
        ("ruff check", [python, "-m", "ruff", "check", "."]),
        ("ruff format", [python, "-m", "ruff", "format", "--check", "."]),
        ("mypy webui/core", [python, "-m", "mypy", "webui/core"]),
        ("pytest", [python, "-m", "pytest", "-q", *argv]),
    ]
    failed = []
    problem = ensure_chromium()
    if problem:
        print(f"== chromium: {problem}", flush=True)
        failed.append("chromium")
    for name, cmd in steps:
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
            failed.append(name)
    print(f"== failed: {', '.join(failed)}" if failed else "== all checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
