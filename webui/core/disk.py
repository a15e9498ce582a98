"""A full disk, said plainly: which errors mean "no space left", and the message a user sees for them."""

from __future__ import annotations

import errno
import sqlite3

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_full_message(error: BaseException, where: str | None = None) -> str | None:
    """ "disk full: ..." naming the file or folder when `error` means no space is left (ENOSPC, a quota,
    a file-size limit, SQLite's "database or disk is full"); None for any other error."""
    if isinstance(error, OSError) and error.errno in _FULL:
        target = error.filename or where
    elif isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower():
        target = where
    else:
        return None
    on = f" while writing {target}" if target else ""
    reason = error.strerror if isinstance(error, OSError) else str(error)
    return f"disk full{on}: free some space on that disk and try again ({reason})"
