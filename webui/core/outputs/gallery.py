"""The gallery: every image under the outputs folder, indexed in SQLite so it pages and searches fast.

- `scan` walks the outputs folder (skipping dot-folders: the trash, caches) and brings the index in
  line with the files: new and changed files are read (size, infotext: prompt, negative prompt, seed,
  model), vanished ones are dropped. Unchanged files cost one `stat`. `add` indexes one file now (a job
  that just saved it).
- `page` lists newest first with a keyset cursor ("created:id"), so page 1,000 costs what page 1 does;
  filters: words of the prompt / negative prompt (FTS5, every word must match, as prefixes), model,
  a date range, a sub-folder, and the owner (a user sees their own images and shared ones).
- `thumbnail` writes a WebP of at most 256 px once per file version.

The index and thumbnails live with the images they describe, in `outputs/.gallery/` (`in_folder`), so
pointing the studio at another outputs folder never mixes two folders' entries.
- `trash` moves a file to `outputs/.trash/` (same relative path) and forgets it; `empty_trash` deletes
  what is there.

Paths are stored relative to the outputs folder and only ever resolved back inside it: nothing a caller
passes (a folder filter included) can reach a file outside.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.types import RequestError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".avif"})
TRASH = ".trash"
INDEX_FOLDER = ".gallery"
THUMB_SIZE = 256
MAX_PAGE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,        -- relative to the outputs folder, '/'-separated
    folder TEXT NOT NULL,             -- its first folder ("txt2img-images"), '' at the top
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,            -- the file's modification time (what A1111 folders keep)
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL DEFAULT '',
    negative TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    infotext TEXT NOT NULL DEFAULT '',
    owner TEXT,                       -- the user whose job made it (NULL: found on disk)
    shared INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_created ON images (created DESC, id DESC);
CREATE INDEX IF NOT EXISTS images_owner ON images (owner, created DESC, id DESC);
CREATE INDEX IF NOT EXISTS images_model ON images (model, created DESC, id DESC);
CREATE VIRTUAL TABLE IF NOT EXISTS images_text USING fts5(
    prompt, negative, content='images', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
    INSERT INTO images_text(rowid, prompt, negative) VALUES (new.id, new.prompt, new.negative);
END;
CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
    INSERT INTO images_text(images_text, rowid, prompt, negative)
    VALUES ('delete', old.id, old.prompt, old.negative);
END;
CREATE TRIGGER IF NOT EXISTS images_au AFTER UPDATE OF prompt, negative ON images BEGIN
    INSERT INTO images_text(images_text, rowid, prompt, negative)
    VALUES ('delete', old.id, old.prompt, old.negative);
    INSERT INTO images_text(rowid, prompt, negative) VALUES (new.id, new.prompt, new.negative);
END;
"""
_COLUMNS = "id, path, folder, created, width, height, model, prompt, negative, seed, owner, shared, size"


@dataclass(frozen=True)
class GalleryImage:
    id: int
    path: str  # relative to the outputs folder
    folder: str
    created: float
    width: int
    height: int
    model: str
    prompt: str
    negative: str
    seed: int | None
    owner: str | None
    shared: bool
    size: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "path": self.path,
            "folder": self.folder,
            "created": self.created,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "prompt": self.prompt,
            "negative_prompt": self.negative,
            "seed": self.seed,
            "owner": self.owner,
            "shared": self.shared,
            "size": self.size,
        }


@dataclass(frozen=True)
class Page:
    images: tuple[GalleryImage, ...]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True)
class ScanReport:
    added: int
    updated: int
    removed: int
    files: int


@dataclass(frozen=True)
class Filters:
    """What `page` keeps. `owner`: None sees everything (an admin, or a server without logins)."""

    query: str = ""
    model: str = ""
    folder: str = ""
    since: float | None = None
    until: float | None = None
    owner: str | None = None


def _image_info(path: Path) -> tuple[int, int, str]:
    """(width, height, infotext) of an image file; (0, 0, '') when it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.width, im.height, read_infotext(im) or ""
    except (OSError, ValueError, SyntaxError):
        return 0, 0, ""


def _fields(infotext: str) -> tuple[str, str, int | None, str]:
    """(prompt, negative prompt, seed, model) from an A1111 infotext."""
    if not infotext:
        return "", "", None, ""
    params = parse_infotext(infotext)
    seed: int | None
    try:
        seed = int(params.get("Seed", ""))
    except ValueError:
        seed = None
    return params.get("Prompt", ""), params.get("Negative prompt", ""), seed, params.get("Model", "")


def fts_query(text: str) -> str:
    """The user's words as an FTS5 query: every word must match (as a prefix); quotes and FTS syntax
    in the words are taken literally."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " AND ".join(f'"{w}"*' for w in words)


class GalleryIndex:
    def __init__(self, outputs: Path, db_path: Path, thumbs: Path) -> None:
        self.outputs = outputs.resolve()
        self.db_path = db_path
        self.thumbs = thumbs
        self._lock = threading.Lock()  # one writer at a time; readers use their own connections
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @classmethod
    def in_folder(cls, outputs: Path) -> GalleryIndex:
        """The index of `outputs`, kept in `outputs/.gallery/` (index.sqlite, thumbs/)."""
        home = outputs / INDEX_FOLDER
        return cls(outputs, home / "index.sqlite", home / "thumbs")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:
                yield db
        finally:
            db.close()

    # ---- indexing -----------------------------------------------------------------------------------

    def _files(self) -> Iterator[tuple[str, os.stat_result]]:
        for root, dirs, files in os.walk(self.outputs):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    full = Path(root) / name
                    try:
                        st = full.stat()
                    except OSError:
                        continue
                    yield full.relative_to(self.outputs).as_posix(), st

    def _row(self, rel: str, st: os.stat_result, owner: str | None) -> tuple[object, ...]:
        width, height, infotext = _image_info(self.outputs / rel)
        prompt, negative, seed, model = _fields(infotext)
        folder = rel.split("/", 1)[0] if "/" in rel else ""
        return (
            rel, folder, st.st_mtime_ns, st.st_size, st.st_mtime, width, height, model, prompt, negative,
            seed, infotext, owner,
        )  # fmt: skip

    def scan(self, owners: Mapping[str, str] | None = None) -> ScanReport:
        """Bring the index in line with the files. `owners` maps absolute or relative paths to the user
        whose job made them (the job store's records); files not in it keep the owner they had."""
        known_owner: dict[str, str] = {}
        for p, o in (owners or {}).items():
            rel = self._relative(p)
            if rel is not None:
                known_owner[rel] = o
        added = updated = 0
        with self._lock, self._connect() as db:
            indexed = {
                row[0]: (row[1], row[2], row[3])
                for row in db.execute("SELECT path, mtime_ns, size, owner FROM images")
            }
            seen: set[str] = set()
            for rel, st in self._files():
                seen.add(rel)
                owner = known_owner.get(rel)
                old = indexed.get(rel)
                if old is not None and old[0] == st.st_mtime_ns and old[1] == st.st_size:
                    if owner is not None and old[2] != owner:
                        db.execute("UPDATE images SET owner=? WHERE path=?", (owner, rel))
                    continue
                row = self._row(rel, st, owner if owner is not None else (old[2] if old else None))
                if old is None:
                    added += 1
                else:
                    updated += 1
                    db.execute("DELETE FROM images WHERE path=?", (rel,))
                db.execute(
                    "INSERT INTO images (path, folder, mtime_ns, size, created, width, height, model, "
                    "prompt, negative, seed, infotext, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
            gone = [p for p in indexed if p not in seen]
            db.executemany("DELETE FROM images WHERE path=?", [(p,) for p in gone])
        return ScanReport(added, updated, len(gone), len(seen))

    def add(self, path: Path, owner: str | None = None) -> GalleryImage | None:
        """Index one file now (a job just saved it); None if it is not an image under the outputs.
        An unchanged file already indexed only takes the owner."""
        rel = self._relative(path)
        if rel is None or Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            return None
        try:
            st = (self.outputs / rel).stat()
        except OSError:
            return None
        with self._connect() as db:
            old = db.execute("SELECT id, mtime_ns, size FROM images WHERE path=?", (rel,)).fetchone()
        if old is not None and (old[1], old[2]) == (st.st_mtime_ns, st.st_size):
            if owner is not None:
                with self._lock, self._connect() as db:
                    db.execute("UPDATE images SET owner=? WHERE id=?", (owner, old[0]))
            return self.get(int(old[0]))
        row = self._row(rel, st, owner)
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM images WHERE path=?", (rel,))
            cur = db.execute(
                "INSERT INTO images (path, folder, mtime_ns, size, created, width, height, model, "
                "prompt, negative, seed, infotext, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            new_id = int(cur.lastrowid or 0)
        return self.get(new_id)

    def sync_jobs(
        self, finished: Callable[[float], Sequence[tuple[float, str, str]]], source: str = "jobs"
    ) -> int:
        """Index the images of the jobs finished since the last sync, with their owners: `finished(since)`
        gives (finished time, owner, path), oldest first (JobQueue.finished_images); `source` names the
        job store (its path), which keeps its own mark. How many."""
        key = f"jobs_synced:{source}"
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        since = float(row[0]) if row else 0.0
        rows = finished(since)
        for _, owner, path in rows:
            self.add(Path(path), owner)
        if rows:
            with self._lock, self._connect() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, repr(rows[-1][0])))
        return len(rows)

    def _relative(self, path: str | Path) -> str | None:
        """`path` relative to the outputs folder ('/'-separated), or None outside it or in a dot-folder.
        Lexical (no symlink resolution): it runs once per file of a scan."""
        text = os.path.normpath(os.path.join(self.outputs, path))
        rel = os.path.relpath(text, self.outputs).replace(os.sep, "/")
        if rel == "." or rel.startswith("../") or rel == "..":
            return None
        return None if any(part.startswith(".") for part in rel.split("/")) else rel

    # ---- reading ------------------------------------------------------------------------------------

    def page(self, filters: Filters = Filters(), cursor: str | None = None, limit: int = 50) -> Page:
        if not 1 <= limit <= MAX_PAGE:
            raise RequestError("limit", f"must be 1 to {MAX_PAGE}, got {limit}")
        where: list[str] = []
        args: list[object] = []
        if filters.query.strip():
            q = fts_query(filters.query)
            if not q:
                return Page((), None)
            where.append("id IN (SELECT rowid FROM images_text WHERE images_text MATCH ?)")
            args.append(q)
        if filters.model:
            where.append("model = ?")
            args.append(filters.model)
        if filters.folder:
            where.append("folder = ?")
            args.append(self._checked_folder(filters.folder))
        if filters.since is not None:
            where.append("created >= ?")
            args.append(filters.since)
        if filters.until is not None:
            where.append("created < ?")
            args.append(filters.until)
        if filters.owner is not None:
            where.append("(owner = ? OR shared = 1)")
            args.append(filters.owner)
        if cursor:
            created, last_id = _parse_cursor(cursor)
            where.append("(created < ? OR (created = ? AND id < ?))")
            args += [created, created, last_id]
        sql = f"SELECT {_COLUMNS} FROM images"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        while True:
            with self._connect() as db:
                rows = db.execute(sql, (*args, limit + 1)).fetchall()
            found = [_image(r) for r in rows]
            gone = [i.id for i in found if not (self.outputs / i.path).exists()]  # deleted elsewhere
            if not gone:
                break
            with self._lock, self._connect() as db:
                db.executemany("DELETE FROM images WHERE id=?", [(i,) for i in gone])
        images = tuple(found[:limit])
        more = len(found) > limit
        return Page(images, f"{images[-1].created!r}:{images[-1].id}" if more and images else None)

    def _checked_folder(self, folder: str) -> str:
        if "/" in folder or "\\" in folder or folder in (".", "..") or folder.startswith("."):
            raise RequestError("folder", f"must be one folder name inside outputs, got {folder!r}")
        return folder

    def get(self, image_id: int) -> GalleryImage | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM images WHERE id=?", (image_id,)).fetchone()
        return _image(row) if row else None

    def infotext(self, image_id: int) -> str:
        with self._connect() as db:
            row = db.execute("SELECT infotext FROM images WHERE id=?", (image_id,)).fetchone()
        return str(row[0]) if row else ""

    def file(self, image: GalleryImage) -> Path:
        """The image's file, resolved inside the outputs folder (or RequestError)."""
        full = (self.outputs / image.path).resolve()
        if not full.is_relative_to(self.outputs):
            raise RequestError("id", "the indexed path is outside the outputs folder")
        return full

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def models(self) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT model FROM images WHERE model != '' ORDER BY model")
            return [r[0] for r in rows]

    # ---- thumbnails, sharing, trash -----------------------------------------------------------------

    def thumbnail(self, image: GalleryImage) -> Path:
        """A WebP of at most THUMB_SIZE px, written once per file version."""
        source = self.file(image)
        st = source.stat()
        out = self.thumbs / f"{image.id}-{st.st_mtime_ns}-{THUMB_SIZE}.webp"
        if out.exists():
            return out
        self.thumbs.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as im:
            thumb = im.convert("RGB")
            thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
            tmp = out.with_suffix(".tmp")
            thumb.save(tmp, format="WEBP", quality=80)
        os.replace(tmp, out)
        return out

    def set_shared(self, image_id: int, shared: bool) -> bool:
        with self._lock, self._connect() as db:
            cur = db.execute("UPDATE images SET shared=? WHERE id=?", (int(shared), image_id))
        return cur.rowcount == 1

    def trash(self, image: GalleryImage) -> Path:
        """Move the file to outputs/.trash/ (same relative path; a number added if taken) and forget it."""
        source = self.file(image)
        target = self.outputs / TRASH / image.path
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():
            target = target.with_name(f"{Path(image.path).stem}-{n}{Path(image.path).suffix}")
            n += 1
        if source.exists():
            shutil.move(source, target)
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM images WHERE id=?", (image.id,))
        for old in self.thumbs.glob(f"{image.id}-*.webp") if self.thumbs.exists() else ():
            old.unlink(missing_ok=True)
        return target

    def empty_trash(self) -> int:
        """Delete every file in the trash; how many there were."""
        trash = self.outputs / TRASH
        if not trash.exists():
            return 0
        count = sum(1 for p in trash.rglob("*") if p.is_file())
        shutil.rmtree(trash)
        return count


def _parse_cursor(cursor: str) -> tuple[float, int]:
    created, _, last = cursor.rpartition(":")
    try:
        return float(created), int(last)
    except ValueError as e:
        raise RequestError("cursor", f"not a cursor this gallery gave: {cursor!r}") from e


def _image(row: tuple[Any, ...]) -> GalleryImage:
    (i, path, folder, created, width, height, model, prompt, negative, seed, owner, shared, size) = row
    return GalleryImage(
        int(i), str(path), str(folder), float(created), int(width), int(height), str(model), str(prompt),
        str(negative), None if seed is None else int(seed), None if owner is None else str(owner),
        bool(shared), int(size),
    )  # fmt: skip
