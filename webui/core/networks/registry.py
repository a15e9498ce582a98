"""The LoRA library: files in the LoRA folders, their header metadata, sidecars and A1111 hashes.

Listing walks the folders (subfolders too, symlinks followed once) and stats each file: nothing is
opened, so 10,000 files list in well under a second. Metadata (the safetensors `__metadata__`, read from
the JSON header alone) and hashes are read on demand and cached: metadata in memory by (path, size,
mtime), hashes in SQLite. Names follow A1111: a network's name is its file stem, its alias the
`ss_output_name` kohya's trainer writes; look-ups try the name, the relative path, then the alias, each
exactly and then ignoring case. Sidecars sit beside the file: `name.json` (A1111's user metadata:
description, activation text, preferred weight...) and a preview `name.preview.png` or `name.png`
(also .jpg, .jpeg, .webp, .gif).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.library.sidecar import preview_and_sidecar, read_sidecar
from webui.core.models.checkpoint_file import CheckpointError, read_raw_header
from webui.core.networks.hashes import SHORT, LoraHashCache

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class LoraFile:
    """One network file as listed: no content read."""

    path: Path
    name: str  # the file stem: what `<lora:name>` uses
    relative: str  # path under its folder without the extension ("styles/ink")
    size: int
    mtime_ns: int
    preview: Path | None = None
    sidecar: Path | None = None  # name.json

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity of this version of the file (changes when the file is replaced)."""
        return (str(self.path), self.size, self.mtime_ns)

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"


@dataclass(frozen=True)
class LoraScan:
    files: tuple[LoraFile, ...]
    problems: tuple[str, ...] = field(default=())


def _walk(root: Path) -> Iterator[tuple[Path, list[os.DirEntry[str]]]]:
    """(folder, its file entries) for `root` and every non-hidden subfolder, sorted, each folder once."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second link to one folder
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        files: list[os.DirEntry[str]] = []
        dirs: list[os.DirEntry[str]] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                (dirs if e.is_dir() else files).append(e)
            except OSError:
                continue
        yield here, files
        stack.extend(Path(d.path) for d in reversed(dirs))


def scan_loras(roots: Sequence[Path]) -> LoraScan:
    """Every `.safetensors`/`.pt`/`.ckpt` under `roots`, in folder order then path order; stat only."""
    files: list[LoraFile] = []
    problems: list[str] = []
    seen: set[str] = set()
    for root in roots:
        if not root.is_dir():
            if root.exists():
                problems.append(f"LoRA folder {root} is not a folder")
            continue  # a missing LoRA folder is normal (models/LyCORIS rarely exists)
        for folder, entries in _walk(root):
            names = {e.name for e in entries}
            for e in entries:
                stem, ext = os.path.splitext(e.name)
                if ext.lower() not in LORA_EXTENSIONS:
                    continue
                try:
                    real = os.path.realpath(e.path)
                    st = e.stat()
                except OSError as err:
                    problems.append(f"{e.path}: cannot stat ({err.strerror})")
                    continue
                if real in seen:
                    continue
                seen.add(real)
                preview, sidecar = preview_and_sidecar(stem, names)
                rel = (folder / stem).relative_to(root).as_posix()
                files.append(
                    LoraFile(
                        Path(e.path),
                        stem,
                        rel,
                        st.st_size,
                        st.st_mtime_ns,
                        folder / preview if preview else None,
                        folder / sidecar if sidecar else None,
                    )
                )
    return LoraScan(tuple(files), tuple(problems))


def read_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a safetensors file from its JSON header alone; {} for other files.

    String values that hold a JSON object (kohya's `ss_tag_frequency`, `ss_dataset_dirs`) are decoded,
    as A1111's API does. Raises CheckpointError for a corrupt header."""
    if path.suffix.lower() != ".safetensors":
        return {}
    meta, _ = read_raw_header(path)
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, str) and v.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                v = json.loads(v)
        out[str(k)] = v
    return out


def base_model(metadata: dict[str, Any]) -> str | None:
    """ "sd1", "sd2", "sdxl", "sd3" or "flux" from kohya/modelspec training metadata (`flux1`,
    `flux-1-dev/lora`, `sd3`, `stable-diffusion-v3.5-large/lora`), None when it does not say."""
    text = " ".join(
        str(metadata.get(k, "")) for k in ("modelspec.architecture", "ss_base_model_version")
    ).lower()
    if "flux" in text:
        return "flux"
    if "sd3" in text or "-v3" in text:
        return "sd3"
    if "xl" in text:
        return "sdxl"
    if "v2" in text or str(metadata.get("ss_v2", "")).lower() == "true":
        return "sd2"
    if "v1" in text:
        return "sd1"
    return None


class LoraLibrary:
    """The LoRA files of some folders; thread-safe, refreshed on demand (`refresh()`), first use scans.

    `hash_db` is the SQLite file for cached hashes (share `config.cache_dir / "hashes.sqlite"`);
    with `hashing=False` (A1111's `--no-hashing`) no hash is ever computed and `hash()` gives None."""

    def __init__(self, dirs: Sequence[Path], hash_db: Path, hashing: bool = True) -> None:
        self.dirs = tuple(dirs)
        self.hashes = LoraHashCache(hash_db)
        self.hashing = hashing
        self._lock = threading.RLock()
        self._scan: LoraScan | None = None
        self._index: dict[str, LoraFile] = {}
        self._aliases: dict[str, LoraFile] | None = None
        self._meta: dict[tuple[str, int, int], dict[str, Any]] = {}

    def refresh(self) -> tuple[str, ...]:
        """Re-list the folders; returns the problems found (unreadable folders or files)."""
        result = scan_loras(self.dirs)
        index: dict[str, LoraFile] = {}
        for fold in (False, True):
            for f in result.files:
                index.setdefault(f.name.casefold() if fold else f.name, f)
            for f in result.files:
                index.setdefault(f.relative.casefold() if fold else f.relative, f)
        with self._lock:
            self._scan, self._index, self._aliases = result, index, None
            keep = {f.key for f in result.files}
            self._meta = {k: v for k, v in self._meta.items() if k in keep}
        return result.problems

    def _current(self) -> LoraScan:
        with self._lock:
            if self._scan is None:
                self.refresh()
            assert self._scan is not None
            return self._scan

    def items(self) -> tuple[LoraFile, ...]:
        return self._current().files

    @property
    def problems(self) -> tuple[str, ...]:
        return self._current().problems

    def metadata(self, item: LoraFile) -> dict[str, Any]:
        """The file's safetensors metadata (cached); {} when it has none or cannot be read."""
        with self._lock:
            cached = self._meta.get(item.key)
        if cached is not None:
            return cached
        try:
            meta = read_metadata(item.path)
        except (OSError, CheckpointError):
            meta = {}
        with self._lock:
            self._meta[item.key] = meta
        return meta

    def alias(self, item: LoraFile) -> str:
        """A1111's alias: the training output name from the metadata, else the file name."""
        value = self.metadata(item).get("ss_output_name")
        return value if isinstance(value, str) and value else item.name

    def user_metadata(self, item: LoraFile) -> dict[str, Any]:
        """The sidecar `name.json` ({} when absent or unreadable)."""
        return read_sidecar(item.sidecar)

    def find(self, name: str) -> LoraFile | None:
        """By name (file stem), relative path, then alias: each exactly, then ignoring case."""
        self._current()
        with self._lock:
            hit = self._index.get(name) or self._index.get(name.casefold())
        if hit is not None:
            return hit
        aliases = self._alias_index()
        return aliases.get(name) or aliases.get(name.casefold())

    def _alias_index(self) -> dict[str, LoraFile]:
        """Built on the first alias look-up: reads every header once (cached across refreshes)."""
        with self._lock:
            if self._aliases is not None:
                return self._aliases
        files = self.items()
        index: dict[str, LoraFile] = {}
        for f in files:
            index.setdefault(self.alias(f), f)
        for f in files:
            index.setdefault(self.alias(f).casefold(), f)
        with self._lock:
            self._aliases = index
        return index

    def hash(self, item: LoraFile) -> str | None:
        """A1111's LoRA hash (computed once, then cached); None with hashing off.

        Like A1111, a `sshs_model_hash` in the metadata (what kohya's trainer records) is taken as is."""
        if not self.hashing:
            return None
        recorded = self.metadata(item).get("sshs_model_hash")
        if isinstance(recorded, str) and _HEX64.fullmatch(recorded):
            return recorded.lower()
        return self.hashes.hash(item.path)

    def shorthash(self, item: LoraFile) -> str | None:
        digest = self.hash(item)
        return digest[:SHORT] if digest else None

    def find_by_shorthash(self, shorthash: str) -> LoraFile | None:
        """A listed file whose cached hash starts with `shorthash` (nothing is hashed here)."""
        want = shorthash.strip().lower()
        if len(want) < SHORT:
            return None
        cached = self.hashes.all_cached()
        for f in self.items():
            row = cached.get(str(f.path))
            if row is not None and row[:2] == (f.size, f.mtime_ns) and row[2].startswith(want):
                return f
        return None

    def listing(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/loras: [{name, alias, path, metadata}] (reads every header once)."""
        return [
            {"name": f.name, "alias": self.alias(f), "path": str(f.path), "metadata": self.metadata(f)}
            for f in self.items()
        ]
