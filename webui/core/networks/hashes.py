"""A1111's LoRA hash, cached in a sibling table of the model hash cache.

A1111 (and Civitai's "AutoV3") hash a `.safetensors` LoRA over the bytes after its header: sha256 of the
file from offset 8 + n, where n is the little-endian u64 at the start. Metadata edits then leave the hash
alone. Other files (`.pt`, `.ckpt`) are hashed whole. The infotext shows the first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from contextlib import closing
from pathlib import Path

from webui.core.models.hashes import CHUNK

SHORT = 12


def lora_sha256(path: Path) -> str:
    """A1111's full LoRA hash of `path` (after the header for `.safetensors`, the whole file otherwise)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix.lower() == ".safetensors":
            head = f.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                f.seek(8 + n)
            # a file shorter than 8 bytes has no header: A1111 seeks past the end and hashes nothing
            else:
                f.seek(0, os.SEEK_END)
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class LoraHashCache:
    """Table `lora_hashes` (path, size, mtime_ns, sha256); each call opens its own SQLite handle.

    Lives in the same database file as `webui.core.models.hashes.HashCache` (whose `hashes` table keeps
    whole-file digests, a different value for the same path)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def _connect(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30)
        con.execute(
            "CREATE TABLE IF NOT EXISTS lora_hashes"
            " (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
        )
        return con

    def get(self, path: Path) -> str | None:
        """The cached hash if the file is unchanged since it was hashed; never reads the file."""
        st = os.stat(path)
        with closing(self._connect()) as con:
            row = con.execute(
                "SELECT sha256 FROM lora_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path), st.st_size, st.st_mtime_ns),
            ).fetchone()
        return str(row[0]) if row else None

    def all_cached(self) -> dict[str, tuple[int, int, str]]:
        """Every cached row: {path: (size, mtime_ns, sha256)} (one query, for look-ups by hash)."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT path, size, mtime_ns, sha256 FROM lora_hashes").fetchall()
        return {str(p): (int(s), int(m), str(h)) for p, s, m, h in rows}

    def hash(self, path: Path) -> str:
        """The file's A1111 LoRA hash, from the cache or computed (and cached)."""
        cached = self.get(path)
        if cached:
            return cached
        st = os.stat(path)
        digest = lora_sha256(path)
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT OR REPLACE INTO lora_hashes VALUES (?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, digest),
            )
        return digest
