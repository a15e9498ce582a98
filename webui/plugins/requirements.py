"""What an extension's manifest `requirements` ask for, against what this Python has installed.

Shown in the Extensions tab so an admin can see what is missing; nothing is installed here (installing
into the app's venv is an explicit admin action, never a side effect of loading an extension).
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement


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
