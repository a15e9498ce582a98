"""Start Sfumato: `python launch.py [flags]` (see `--help`).

Sets up (or reuses) the virtual environment in .venv with requirements.txt (and requirements-ray.txt for
--ray / --ray-local), then runs the app inside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from webui import bootstrap, flags, jemalloc, offline  # noqa: E402  (stdlib-only modules)


def requirement_files(ns: object) -> list[Path]:
    """requirements.txt, and requirements-ray.txt when --ray or --ray-local asks for Ray workers."""
    files = [ROOT / "requirements.txt"]
    if getattr(ns, "ray", None) is not None or getattr(ns, "ray_local", None) is not None:
        files.append(ROOT / "requirements-ray.txt")
    return files


def main(argv: list[str]) -> int:
    try:
        ns = flags.parse_flags(argv)
    except flags.FlagError as e:
        print(f"launch.py: error: {e}\nRun 'python launch.py --help' to see the flags.", file=sys.stderr)
        return 2
    venv_dir = Path(ns.venv).resolve() if ns.venv else ROOT / ".venv"
    if not ns.skip_install and not bootstrap.running_in(venv_dir):
        python = bootstrap.ensure_venv(venv_dir, requirement_files(ns))
        os.execv(str(python), [str(python), str(ROOT / "launch.py"), *argv])
    if ns.jemalloc:  # before torch is imported: the allocator is chosen when the process starts
        print(jemalloc.ensure(ns.jemalloc, [sys.executable, str(ROOT / "launch.py"), *argv]), file=sys.stderr)
    offline.apply()
    from webui.app import main as app_main

    return app_main(ns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
