"""One card per model file of every kind: what the Models tab's library grid and `/api/v1/cards` show.

A card holds the file's kind, name, size, base model (sd1, sd2, sdxl, sd3, flux, when something says),
short hash (when a hash is cached: nothing is hashed by a scan), its preview picture and its A1111
sidecar `name.json` (webui.core.library.sidecar).

A scan lists the kind folders (subfolders too, each folder once whatever the symlinks) and stats each
file; for `.safetensors` files it reads the JSON header alone (bounded) to learn the base model, cached
by (path, size, mtime) so a rescan of unchanged files reads nothing. The base model comes, in order,
from the sidecar's `sd version`, the header's training metadata (kohya/modelspec), or the tensors
(a checkpoint's text encoders, an embedding's width). Search matches words against the name, folder,
kind, base and the sidecar's description, activation text and notes, prepared at scan time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from webui.core.config import AppConfig
from webui.core.library.sidecar import previews_in, read_sidecar, user_fields
from webui.core.models.checkpoint_file import CheckpointError, read_raw_header
from webui.core.models.hashes import HashCache

KINDS = ("checkpoint", "lora", "embedding", "vae", "upscaler", "controlnet", "text_encoder")
KIND_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "checkpoint": "Checkpoint",
        "lora": "LoRA",
        "embedding": "Embedding",
        "vae": "VAE",
        "upscaler": "Upscaler",
        "controlnet": "ControlNet",
        "text_encoder": "Text encoder",
    }
)
EXTENSIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "checkpoint": (".safetensors", ".ckpt"),
        "lora": (".safetensors", ".pt", ".ckpt"),
        "embedding": (".safetensors", ".pt", ".bin"),
        "vae": (".safetensors", ".ckpt", ".pt", ".bin"),
        "upscaler": (".safetensors", ".pth", ".pt"),
        "controlnet": (".safetensors", ".pth", ".ckpt", ".bin"),
        "text_encoder": (".safetensors",),
    }
)
BASES = ("sd1", "sd2", "sdxl", "sd3", "flux")
SHORT = 10  # A1111's short model hash (Civitai's AutoV2)
SORTS: Mapping[str, Callable[[list[Any]], list[Any]]] = MappingProxyType(
    {
        "": lambda cards: cards,  # scan order: kind, then folder by folder
        "name": lambda cards: sorted(cards, key=lambda c: (c.name.casefold(), c.file)),
        "date": lambda cards: sorted(cards, key=lambda c: -c.mtime_ns),  # newest first
        "size": lambda cards: sorted(cards, key=lambda c: -c.size),  # largest first
        "base": lambda cards: sorted(cards, key=lambda c: BASES.index(c.base) if c.base in BASES else 99),
    }
)
_NO_NOTES: Mapping[str, Any] = MappingProxyType(user_fields({}))


def kind_folders(config: AppConfig) -> dict[str, tuple[Path, ...]]:
    """The folders each kind is listed from (A1111's layout and the folder flags)."""
    models = config.models_dir
    return {
        "checkpoint": config.ckpt_dirs,
        "lora": config.lora_dirs,
        "embedding": (config.embeddings_dir,),
        "vae": config.vae_dirs,
        "upscaler": (models / "ESRGAN", models / "RealESRGAN", models / "SwinIR"),
        "controlnet": (models / "ControlNet", models / "ipadapter"),
        "text_encoder": config.text_encoder_dirs or (models / "text_encoder",),
    }


def normal_base(text: str | None) -> str | None:
    """ "sd1", "sd2", "sdxl", "sd3" or "flux" from how people and tools write it ("SD 1.5", "SDXL 1.0",
    "Pony", "Flux.1 D", A1111's "SD1"); None when it says none of these."""
    t = (text or "").strip().lower().replace(" ", "").replace("_", "").replace("-", "")
    if not t or t == "unknown":
        return None
    if "flux" in t:
        return "flux"
    if "xl" in t or "pony" in t or "illustrious" in t:
        return "sdxl"
    if t.startswith("sd3") or "v3" in t:
        return "sd3"
    if t.startswith("sd2") or "v2" in t:
        return "sd2"
    if t.startswith("sd1") or "v1" in t or t == "sd":
        return "sd1"
    return None


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """(metadata, {tensor name: shape}) from a safetensors header alone; CheckpointError if corrupt."""
    meta, entries = read_raw_header(path)
    return meta, {str(k): list(v.get("shape") or []) for k, v in entries.items() if isinstance(v, dict)}


def header_base(kind: str, path: Path) -> str | None:
    """The base model a `.safetensors` file's header tells, or a diffusers checkpoint folder's configs
    (None for other files or when they do not)."""
    from webui.core.networks.registry import base_model

    if kind == "checkpoint" and path.is_dir():
        from webui.core.models.family_probe import family_of_path

        family = family_of_path(path)
        return family.group.removesuffix("-refiner") if family is not None else None
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        meta, shapes = read_header(path)
    except (OSError, CheckpointError):
        return None
    found = base_model(meta) or normal_base(str(meta.get("modelspec.architecture") or ""))
    if found:
        return found
    if kind == "checkpoint":
        from webui.core.models.detect import detect
        from webui.core.models.flow_components import detect_flow

        try:
            return detect(path, {k: tuple(v) for k, v in shapes.items()}).family.removesuffix("-refiner")
        except CheckpointError:
            flow = detect_flow({k: tuple(v) for k, v in shapes.items()})
            return flow.family if flow is not None else None
    if kind == "embedding":
        if "clip_g" in shapes or "clip_l" in shapes:
            return "sdxl"
        widths = {s[-1] for s in shapes.values() if len(s) == 2}
        return {768: "sd1", 1024: "sd2"}.get(next(iter(widths))) if len(widths) == 1 else None
    return None


@dataclass(frozen=True)
class Card:
    kind: str
    name: str  # the file stem
    file: str  # path under its folder, with the extension ("styles/ink.safetensors")
    where: str  # the file's full path (kept as text: a Path per file doubles the scan's time)
    folder: Path  # the kind folder it was found in
    size: int
    mtime_ns: int
    base: str | None = None
    shorthash: str | None = None
    preview: Path | None = None
    sidecar: Path | None = None
    user: Mapping[str, Any] = field(default_factory=dict)  # the sidecar's A1111 keys (user_fields)
    words: str = ""  # what search looks in, case-folded
    is_folder: bool = False  # a diffusers folder (model_index.json and component folders), not one file

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.file)

    @property
    def path(self) -> Path:
        return Path(self.where)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "file": self.file,
            "size": self.size,
            "mtime": self.mtime_ns / 1e9,
            "base": self.base,
            "shorthash": self.shorthash,
            "has_preview": self.preview is not None,
            "preview_url": (
                f"/api/v1/cards/preview?{urlencode({'kind': self.kind, 'file': self.file})}"
                if self.preview
                else None
            ),
            "user_metadata": dict(self.user),
            "format": "diffusers folder" if self.is_folder else "file",
        }


def is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model_index.json"))


def _walk(root: Path) -> Iterator[tuple[Path, list[os.DirEntry[str]], list[os.DirEntry[str]]]]:
    """(folder, its file entries, its diffusers model folders) for `root` and its non-hidden
    subfolders, each folder once whatever the symlinks. A diffusers folder (one holding
    `model_index.json`) is one model: it is listed, never walked into (its component files are not
    models of their own)."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        files: list[os.DirEntry[str]] = []
        models: list[os.DirEntry[str]] = []
        dirs: list[Path] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if not e.is_dir():
                    files.append(e)
                elif is_diffusers_folder(e.path):
                    models.append(e)
                else:
                    dirs.append(Path(e.path))
            except OSError:
                continue
        yield here, files, models
        stack.extend(reversed(dirs))


def folder_size(path: str) -> int:
    """The bytes of every file under a diffusers folder (its components' weights and configs)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True)
class _Folder:
    """What a scan needs of one folder, worked out once for all its files."""

    root: Path  # the kind folder
    path: Path
    text: str  # str(path)
    real: str  # its real path (for telling symlinked duplicates apart)
    relative: str  # "sub/dir/" under the kind folder ("" at the top)
    names: frozenset[str]
    previews: Mapping[str, str]  # model stem -> its preview's file name

    @classmethod
    def of(cls, root: Path, folder: Path, entries: Sequence[os.DirEntry[str]]) -> _Folder:
        names = frozenset(e.name for e in entries)
        rel = folder.relative_to(root).as_posix()
        return cls(
            root, folder, str(folder), os.path.realpath(folder), "" if rel == "." else rel + "/",
            names, previews_in(names),
        )  # fmt: skip


def _stamp(folder: str) -> int:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return -1


class CardLibrary:
    """Every model file's card; thread-safe; the first use scans, and so does any use after a folder
    changed (see `changed()`); `refresh()` rescans.

    `folders` maps a kind to its folders (kind_folders); `hash_db` is the model hash cache whose
    whole-file sha256 gives the short hash (None: no hashes shown)."""

    def __init__(self, folders: Mapping[str, Sequence[Path]], hash_db: Path | None = None) -> None:
        self.folders = {k: tuple(v) for k, v in folders.items()}
        self.hash_db = hash_db
        self._lock = threading.RLock()
        self.edits = threading.Lock()  # one sidecar read-merge-write at a time (two saves never lose a key)
        self._cards: tuple[Card, ...] | None = None
        self._index: dict[tuple[str, str], Card] = {}
        self._bases: dict[tuple[str, int, int], str | None] = {}
        self._problems: tuple[str, ...] = ()
        self._stamps: dict[str, int] = {}  # folder -> its mtime at the last scan (-1: missing)

    @classmethod
    def for_config(cls, config: AppConfig) -> CardLibrary:
        db = config.cache_dir / "hashes.sqlite" if config.hashing else None
        return cls(kind_folders(config), db)

    # -- scanning -----------------------------------------------------------------------------------
    def _hashes(self) -> dict[str, tuple[int, int, str]]:
        if self.hash_db is None or not self.hash_db.exists():
            return {}
        try:
            return HashCache(self.hash_db).all_cached()
        except Exception:  # an unreadable cache only hides the short hashes
            return {}

    def _base(self, kind: str, path: str, size: int, mtime_ns: int) -> str | None:
        key = (path, size, mtime_ns)
        with self._lock:
            if key in self._bases:
                return self._bases[key]
        found = header_base(kind, Path(path))
        with self._lock:
            self._bases[key] = found
        return found

    def make_card(
        self,
        kind: str,
        view: _Folder,
        entry_name: str,
        st: os.stat_result,
        hashes: Mapping[str, tuple[int, int, str]],
        is_folder: bool = False,
    ) -> Card:
        """The card of one model file, or of a diffusers folder (`is_folder`: `st` is its
        `model_index.json`'s stat, the size is every file under it, no hash: it is not one file)."""
        stem = entry_name if is_folder else os.path.splitext(entry_name)[0]
        path_text = os.path.join(view.text, entry_name)
        size = folder_size(path_text) if is_folder else st.st_size
        preview = view.previews.get(stem)
        sidecar = f"{stem}.json" if f"{stem}.json" in view.names else None
        user = user_fields(read_sidecar(view.path / sidecar)) if sidecar else _NO_NOTES
        base = normal_base(user["sd version"]) or self._base(kind, path_text, size, st.st_mtime_ns)
        row = None if is_folder else hashes.get(path_text)
        short = row[2][:SHORT] if row and row[:2] == (st.st_size, st.st_mtime_ns) else None
        file = view.relative + entry_name
        text = (kind, KIND_LABELS[kind], file, base or "", user["description"], user["activation text"],
                user["notes"])  # fmt: skip
        return Card(
            kind,
            stem,
            file,
            path_text,
            view.root,
            size,
            st.st_mtime_ns,
            base,
            short,
            view.path / preview if preview else None,
            view.path / sidecar if sidecar else None,
            user,
            " ".join(text).casefold(),
            is_folder,
        )

    def refresh(self) -> tuple[str, ...]:
        """Rescan every kind folder; returns the problems found (a folder that is not a folder)."""
        hashes = self._hashes()
        cards: list[Card] = []
        problems: list[str] = []
        seen: set[tuple[str, str]] = set()
        stamps: dict[str, int] = {}
        for kind in KINDS:
            exts = EXTENSIONS[kind]
            for root in self.folders.get(kind, ()):
                stamps[str(root)] = _stamp(str(root))
                if not root.is_dir():
                    if root.exists():
                        problems.append(f"{KIND_LABELS[kind]} folder {root} is not a folder")
                    continue
                for folder, entries, model_dirs in _walk(root):
                    stamps[str(folder)] = _stamp(str(folder))
                    view = _Folder.of(root, folder, entries)
                    for d in model_dirs if kind == "checkpoint" else ():
                        index_json = os.path.join(d.path, "model_index.json")
                        try:
                            st = os.stat(index_json)
                            real = os.path.realpath(d.path)
                        except OSError:
                            continue
                        stamps[d.path] = _stamp(d.path)
                        if (kind, real) not in seen:
                            seen.add((kind, real))
                            cards.append(self.make_card(kind, view, d.name, st, hashes, is_folder=True))
                    for e in entries:
                        if not e.name.lower().endswith(exts):
                            continue
                        try:
                            real = (
                                os.path.realpath(e.path)
                                if e.is_symlink()
                                else os.path.join(view.real, e.name)
                            )
                            st = e.stat()
                        except OSError:
                            continue
                        if (kind, real) in seen:
                            continue
                        seen.add((kind, real))
                        cards.append(self.make_card(kind, view, e.name, st, hashes))
        index: dict[tuple[str, str], Card] = {}
        for c in cards:
            index.setdefault(c.key, c)  # the first folder wins when two hold the same relative name
        with self._lock:
            self._cards, self._index, self._problems = tuple(cards), index, tuple(problems)
            self._stamps = stamps
            live = {(c.where, c.size, c.mtime_ns) for c in cards}
            self._bases = {k: v for k, v in self._bases.items() if k in live}
        return tuple(problems)

    def refresh_card(self, card: Card) -> Card:
        """Re-read one card (after its sidecar or preview changed) without rescanning the rest."""
        folder = card.path.parent
        try:
            with os.scandir(folder) as it:
                entries = list(it)
            is_folder = card.path.is_dir()
            st = (card.path / "model_index.json").stat() if is_folder else card.path.stat()
        except OSError:
            return card
        view = _Folder.of(card.folder, folder, [e for e in entries if not e.is_dir()])
        fresh = self.make_card(card.kind, view, card.path.name, st, self._hashes(), is_folder)
        with self._lock:
            cards = self._cards or ()
            self._cards = tuple(fresh if c.key == card.key and c.folder == card.folder else c for c in cards)
            if self._index.get(card.key) == card:
                self._index[card.key] = fresh
            if str(folder) in self._stamps:  # our own write is no reason to rescan everything
                self._stamps[str(folder)] = _stamp(str(folder))
        return fresh

    def changed(self) -> bool:
        """Whether a scanned folder changed since the scan (a file added, removed or renamed: a download,
        a copy by hand, a new sidecar or preview). One stat per folder, nothing listed."""
        with self._lock:
            stamps = dict(self._stamps)
        return any(_stamp(folder) != stamp for folder, stamp in stamps.items())

    # -- reading ------------------------------------------------------------------------------------
    def cards(self) -> tuple[Card, ...]:
        """The cards, rescanned first when a folder changed (files edited in place need refresh())."""
        with self._lock:
            if self._cards is None or self.changed():
                self.refresh()
            assert self._cards is not None
            return self._cards

    @property
    def problems(self) -> tuple[str, ...]:
        self.cards()
        return self._problems

    def find(self, kind: str, file: str) -> Card | None:
        """The listed card of this kind whose path under its folder is `file` (exactly), or None."""
        self.cards()
        with self._lock:
            return self._index.get((kind, file))

    def search(self, query: str = "", kind: str = "", base: str = "", sort: str = "") -> list[Card]:
        """Cards whose text holds every word of `query` (any case), of `kind` and `base` when given;
        in scan order (kind, then folder by folder), or sorted by `sort` (SORTS)."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r} (known: {', '.join(s for s in SORTS if s)})")
        words = (query or "").casefold().split()
        want_base = normal_base(base) if base else None
        if base and want_base is None:
            want_base = base.strip().lower()
        out = []
        for c in self.cards():
            if kind and c.kind != kind:
                continue
            if base and c.base != want_base:
                continue
            if words and not all(w in c.words for w in words):
                continue
            out.append(c)
        return SORTS[sort](out)

    def counts(self) -> dict[str, int]:
        """How many cards of each kind."""
        out = dict.fromkeys(KINDS, 0)
        for c in self.cards():
            out[c.kind] += 1
        return out
