"""Create or reuse the virtual environment and install requirements. Standard library only.

Used by `launch.py` (requirements.txt) and `tests/run.py` (requirements-test.txt) before anything else of
Sfumato's is importable. Requirements are reinstalled only when their files change (a stamp in the venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def running_in(venv_dir: Path) -> bool:
    return Path(sys.prefix).resolve() == venv_dir.resolve()


def _requirements_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
        # follow "-r other.txt" includes so a change there reinstalls too
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("-r "):
                inc = f.parent / line[3:].strip()
                h.update(inc.read_bytes())
    return h.hexdigest()


def ensure_venv(venv_dir: Path, requirement_files: list[Path], quiet: bool = False) -> Path:
    """Make sure `venv_dir` exists with the requirements installed; return its python."""
    python = venv_python(venv_dir)
    if not python.exists():
        print(f"Creating virtual environment in {venv_dir} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    stamp = venv_dir / ".sfumato-requirements"
    digest = _requirements_digest(requirement_files)
    if stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print("Installing requirements (first run, or requirements changed) ...", flush=True)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        cmd.append("-q")
    for f in requirement_files:
        cmd += ["-r", str(f)]
    subprocess.run(cmd, check=True)
    stamp.write_text(digest)
    return python
