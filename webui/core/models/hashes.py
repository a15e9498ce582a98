"""sha256 of model files, cached by (path, size, mtime) in SQLite so a library is hashed once.

The short hash users see (`Model hash: 6ce0161689`, Civitai's "AutoV2") is the first 10 hex digits of
the whole file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

CHUNK = 4 * 2**20


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """The whole file's sha256; `progress(bytes read, file size)` after each chunk when given."""
    h = hashlib.sha256()
    total = os.stat(path).st_size if progress else 0
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                done += len(chunk)
                progress(done, total)
    return h.hexdigest()


class HashCache:
    """A small SQLite table of digests; safe to share between threads and processes (each call opens its
    own handle). `table` and `digest` let other kinds of hash (LoRA hashes) live beside the model ones."""

    def __init__(
        self, db_path: Path, table: str = "hashes", digest: Callable[[Path], str] = sha256_file
    ) -> None:
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        self.db_path = db_path
        self.table = table
        self.digest = digest

    def _connect(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30)
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table}"
            " (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
        )
        return con

    def get(self, path: Path) -> str | None:
        """The cached digest if the file is unchanged since it was hashed; never reads the file."""
        st = os.stat(path)
        with closing(self._connect()) as con:
            row = con.execute(
                f"SELECT sha256 FROM {self.table} WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path), st.st_size, st.st_mtime_ns),
            ).fetchone()
        return str(row[0]) if row else None

    def all_cached(self) -> dict[str, tuple[int, int, str]]:
        """Every cached row: {path: (size, mtime_ns, digest)} (one query, for look-ups by hash)."""
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT path, size, mtime_ns, sha256 FROM {self.table}").fetchall()
        return {str(p): (int(s), int(m), str(h)) for p, s, m, h in rows}

    def record(self, path: Path, digest: str) -> None:
        """Remember a digest computed elsewhere (a download hashed its bytes as they came)."""
        st = os.stat(path)
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, digest),
            )

    def hash(self, path: Path) -> str:
        """The file's digest, from the cache or computed (and cached)."""
        cached = self.get(path)
        if cached:
            return cached
        st = os.stat(path)
        digest = self.digest(path)
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, digest),
            )
        return digest


def folder_sha256(folder: Path, cache: HashCache) -> str:
    """A stable hash of a diffusers folder: its files' relative paths and hashes."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + cache.hash(f).encode() + b"\n")
    return h.hexdigest()
