"""A1111's LoRA hash, cached in a sibling table of the model hash cache.

A1111 (and Civitai's "AutoV3") hash a `.safetensors` LoRA over the bytes after its header: sha256 of the
file from offset 8 + n, where n is the little-endian u64 at the start. Metadata edits then leave the hash
alone. Other files (`.pt`, `.ckpt`) are hashed whole. The infotext shows the first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from webui.core.models.hashes import CHUNK, HashCache

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


class LoraHashCache(HashCache):
    """Table `lora_hashes` (path, size, mtime_ns, A1111 LoRA hash) in the same database file as the
    model hashes (whose `hashes` table keeps whole-file digests, a different value for the same path)."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path, table="lora_hashes", digest=lora_sha256)
