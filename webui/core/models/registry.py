"""What model files the user has: a scan of the model folders, with A1111's titles and look-ups.

Scanning only lists and stats files; hashes are computed on demand (or read from the cache), so a
folder of thousands of checkpoints lists in well under a second and is hashed once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from webui.core.models.hashes import HashCache, folder_sha256

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
VAE_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".bin")
TEXT_ENCODER_EXTENSIONS = (".safetensors",)  # what the SD3/Flux loader reads


@dataclass(frozen=True)
class ModelFile:
    path: Path
    name: str  # path relative to its folder, with extension ("sub/model.safetensors"); folders: "sub/model"
    size: int
    mtime_ns: int
    is_folder: bool = False
    sha256: str | None = None

    @property
    def model_name(self) -> str:
        """Name without extension, as A1111's `model_name`."""
        return self.name if self.is_folder else self.name.rsplit(".", 1)[0]

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name


@dataclass(frozen=True)
class ScanResult:
    files: tuple[ModelFile, ...]
    problems: tuple[str, ...] = field(default=())


def _walk(root: Path, extensions: Sequence[str], folders: bool) -> Iterable[tuple[Path, bool]]:
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        here = Path(dirpath)
        if folders and "model_index.json" in filenames and here != root:
            dirnames[:] = []
            yield here, True
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in sorted(filenames):
            if fn.lower().endswith(tuple(extensions)) and not fn.startswith("."):
                yield here / fn, False


def scan(
    roots: Sequence[Path], extensions: Sequence[str], hashes: HashCache | None = None, folders: bool = True
) -> ScanResult:
    """List model files (and diffusers folders) under `roots`; cached hashes are filled in, none computed."""
    files: list[ModelFile] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            problems.append(f"models folder {root} does not exist")
            continue
        if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
            problems.append(f"models folder {root} is not a readable folder")
            continue
        for path, is_folder in _walk(root, extensions, folders):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                st = path.stat()
            except OSError as e:
                problems.append(f"{path}: cannot stat ({e.strerror})")
                continue
            sha = hashes.get(path) if hashes is not None and not is_folder else None
            name = path.relative_to(root).as_posix()
            files.append(ModelFile(path, name, st.st_size, st.st_mtime_ns, is_folder, sha))
    return ScanResult(tuple(files), tuple(problems))


def with_hash(item: ModelFile, hashes: HashCache) -> ModelFile:
    """The same entry with its sha256 computed (or read from the cache)."""
    if item.sha256:
        return item
    digest = folder_sha256(item.path, hashes) if item.is_folder else hashes.hash(item.path)
    return replace(item, sha256=digest)


def find(files: Iterable[ModelFile], query: str) -> ModelFile | None:
    """Find by title, name, name without extension, short hash or full sha256 (A1111's look-up order)."""
    q = query.strip()
    items = list(files)
    keys: tuple[Callable[[ModelFile], str | None], ...] = (
        lambda f: f.title,
        lambda f: f.name,
        lambda f: f.model_name,
        lambda f: f.shorthash,
        lambda f: f.sha256,
        lambda f: f.path.name,
        lambda f: f.path.stem,
    )
    for key in keys:
        for f in items:
            if key(f) == q:
                return f
    # a title from another machine: "name [hash]" where only the name matches
    if q.endswith("]") and " [" in q:
        return find(items, q.rsplit(" [", 1)[0])
    return None
