"""What error text a client may see: no heap addresses, no absolute paths of this machine.

Library messages carry both (`<_io.BytesIO object at 0x7f...>`, `/home/me/sd/models/x.safetensors`):
they tell a remote client how the server is laid out and help nobody fix their request. Addresses are
dropped and an absolute path is shortened to its last part (the file name the user knows). Applied
where errors leave the server: request errors, job errors, failed blocking calls.
"""

from __future__ import annotations

import os
import re

_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")
_BARE_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,}\b")
_POSIX_PATH = re.compile(r"(?<![\w/:.~-])(/[\w.+@-]+(?:/[\w.+@ -]*[\w.+@-])*)")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\\\s'\"<>|]+\\)*([^\\\s'\"<>|]+)")


def _short(match: re.Match[str]) -> str:
    path = match.group(1)
    parts = [p for p in path.split("/") if p]
    top = "/" + parts[0] if parts else "/"
    # only paths of this machine (a top folder that exists): URL paths like /sdapi/v1 stay as they are
    if len(parts) < 2 or not os.path.isdir(top):
        return path
    return parts[-1]


def public_text(text: str | None) -> str | None:
    """`text` without heap addresses and with absolute paths shortened to their last part."""
    if not text:
        return text
    text = _ADDRESS.sub("", text)
    text = _BARE_ADDRESS.sub("0x…", text)
    text = _WINDOWS_PATH.sub(lambda m: m.group(1), text)
    return _POSIX_PATH.sub(_short, text)
