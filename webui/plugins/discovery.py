"""Finding extensions: folders with an `extension.toml`, and pip packages exposing an entry point.

Sources, in precedence order: the built-in `extensions/` folder of the install, the user's
`<data dir>/extensions/`, then installed packages with an entry point in the group
"sfumato.extensions" (`name = "package.module"`; the top-level package must ship an extension.toml
beside its __init__.py). When two sources offer the same name, the first wins and the other is listed
with an error. The load order is the names sorted case-insensitively, whatever their source: it does
not depend on the file system's listing order or on install order.

Nothing here imports extension code: for pip packages the manifest is located with
`importlib.util.find_spec` of the top-level package, which does not execute it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from webui.plugins.manifest import MANIFEST_NAME, Manifest, ManifestError, parse_manifest

ENTRY_POINT_GROUP = "sfumato.extensions"


@dataclass(frozen=True)
class Found:
    """One discovered extension: its manifest, or (when unreadable) the problem and where it was."""

    name: str
    location: str
    source: str
    manifest: Manifest | None = None
    problem: str | None = None


def _from_folder(folder: Path, source: str) -> Found:
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return Found(
            folder.name,
            str(folder),
            source,
            problem=f"no {MANIFEST_NAME} in {folder}: not a Sfumato extension (A1111 extensions do not load)",
        )
    try:
        return Found(folder.name, str(folder), source, parse_manifest(manifest_path, source, folder))
    except ManifestError as e:
        return Found(folder.name, str(folder), source, problem=str(e))


def scan_folder(root: Path, source: str) -> list[Found]:
    """Every sub-folder of root (hidden ones and __pycache__ skipped); a missing root gives nothing."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    return [_from_folder(c, source) for c in children if not c.name.startswith((".", "__"))]


def _from_entry_point(ep: importlib.metadata.EntryPoint) -> Found:
    where = f"entry point {ep.name} = {ep.value}"
    module = ep.value.split(":", 1)[0].strip()
    top = module.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)  # top-level: located, not executed
    except (ImportError, ValueError) as e:
        return Found(ep.name, where, "pip", problem=f"{where}: cannot locate package {top!r}: {e}")
    if spec is None or not spec.submodule_search_locations:
        return Found(ep.name, where, "pip", problem=f"{where}: {top!r} is not an installed package")
    folder = Path(next(iter(spec.submodule_search_locations)))
    try:
        m = parse_manifest(folder / MANIFEST_NAME, "pip", folder)
    except ManifestError as e:
        return Found(ep.name, where, "pip", problem=str(e))
    if m.name != ep.name:
        return Found(
            ep.name, where, "pip", problem=f"{where}: manifest name {m.name!r} differs from {ep.name!r}"
        )
    return Found(m.name, where, "pip", Manifest(**{**m.__dict__, "entry": module}))


def entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def discover(
    folders: Sequence[tuple[Path, str]],
    eps: Iterable[importlib.metadata.EntryPoint] = (),
) -> list[Found]:
    """All extensions from `folders` ((path, source) in precedence order) and `eps`, in load order."""
    found: list[Found] = []
    seen_roots: set[Path] = set()
    for root, source in folders:
        resolved = root.resolve()
        if resolved in seen_roots:
            continue
        seen_roots.add(resolved)
        found.extend(scan_folder(root, source))
    found.extend(_from_entry_point(ep) for ep in eps)
    out: list[Found] = []
    first: dict[str, Found] = {}
    for f in found:
        key = (f.manifest.name if f.manifest else f.name).casefold()
        if key in first:
            other = first[key]
            out.append(
                Found(
                    f.name,
                    f.location,
                    f.source,
                    problem=f"duplicate name: {other.location} already provides it",
                )
            )
            continue
        first[key] = f
        out.append(f)
    return sorted(out, key=lambda f: ((f.manifest.name if f.manifest else f.name).casefold(), f.location))
