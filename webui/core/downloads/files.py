"""The file side of a download: the staging folder and names, what the server's headers say (ranges,
file names), a safetensors header read from the first bytes, hashing, and the move into place."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
from email.message import Message
from pathlib import Path
from urllib.parse import unquote

from webui.core.config import AppConfig
from webui.core.downloads.request import DownloadRequest

CHUNK = 1 << 20
MAX_HEADER_BYTES = 100 << 20  # a safetensors header larger than this is not read early
STAGING = ".downloads"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def staging_paths(config: AppConfig, request: DownloadRequest) -> tuple[Path, Path]:
    """The part file and its notes for this request (the same request finds them again after a restart)."""
    key = hashlib.sha256(f"{request.url}\n{request.kind}\n{request.filename}".encode()).hexdigest()[:24]
    folder = config.models_dir / STAGING
    return folder / f"{key}.part", folder / f"{key}.json"


def remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def content_range(value: str | None) -> tuple[int, int] | None:
    """(first byte, total) from `bytes a-b/total`; total 0 when the server says `*`."""
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m.group(1)), 0 if m.group(3) == "*" else int(m.group(3))


def disposition_name(headers: Message) -> str:
    value = headers.get("Content-Disposition") or ""
    m = re.search(r"filename\*\s*=\s*[^']*''([^;]+)", value) or re.search(
        r'filename\s*=\s*"?([^";]+)"?', value
    )
    return unquote(m.group(1)).strip() if m else ""


def header_shapes(head: bytes) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes of a safetensors header once its bytes are all in `head`, else None."""
    if len(head) < 8:
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if n > MAX_HEADER_BYTES or len(head) < 8 + n:
        return None
    try:
        header = json.loads(head[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return {
        k: tuple(int(d) for d in v.get("shape", ()))
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict)
    }


def move_into_place(part: Path, target: Path) -> None:
    """Rename into place; across disks, copy beside the target first, then rename (never half a file)."""
    try:
        os.replace(part, target)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(part, tmp)
        os.replace(tmp, target)
    finally:
        remove(tmp)
    remove(part)
