"""What an extension's manifest `requirements` ask for, against what this Python has installed.

Shown in the Extensions tab so an admin can see what is missing. Installing them into the app's Python
(its venv) is an explicit admin action (`install_requirements`), never a side effect of loading an
extension, refused like git installs while others can reach the server; pip runs as a subprocess (no
shell) on named packages only: a requirement that points at a URL or a file is refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

from webui.core.config import AppConfig
from webui.plugins.install import InstallError, check_access

PIP_TIMEOUT_S = 1800


def check_requirement(text: str) -> tuple[bool, str]:
    """(satisfied, `<requirement>: <state>`); state: "installed X", "installed X, needs <spec>",
    "missing", "not for this platform" (satisfied: nothing to do) or "not a valid requirement"."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return False, f"{text}: not a valid requirement"
    if req.marker is not None and not req.marker.evaluate():
        return True, f"{text}: not for this platform"
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False, f"{text}: missing"
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        return False, f"{text}: installed {have}, needs {req.specifier}"
    return True, f"{text}: installed {have}"


def requirements_text(requirements: tuple[str, ...]) -> str:
    """One line for the Extensions list: every requirement with its state ("" when there are none)."""
    return "; ".join(check_requirement(r)[1] for r in requirements)


def install_requirements(
    config: AppConfig,
    requirements: Sequence[str],
    *,
    share: bool = False,
    insecure_access: bool = False,
    pip_args: Sequence[str] = (),
) -> str:
    """pip-install the requirements that are not satisfied, into this Python; returns what was done.
    InstallRefused when others can reach the server, InstallError when a requirement is not a named
    package or pip fails (its last lines). `pip_args` go before the requirements (tests: --target...)."""
    check_access(config, share=share, insecure_access=insecure_access)
    todo = [r for r in requirements if not check_requirement(r)[0]]
    if not todo:
        return "every requirement is already installed"
    for text in todo:
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            raise InstallError(f"{text!r} is not a valid requirement: {e}") from e
        if req.url:
            raise InstallError(
                f"{text!r} points at {req.url}: only named packages from the index are installed"
            )
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *pip_args]
    try:
        done = subprocess.run(
            [*cmd, "--", *todo], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"pip could not run: {e}") from e
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise InstallError(f"pip failed (exit {done.returncode}): {tail}")
    return f"installed {', '.join(todo)}: restart to load the extension with them"
