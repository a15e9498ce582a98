"""Server-side login sessions: a random token in the browser's cookie, its SHA-256 here (SQLite).

A session is a row (who, created, expires, last seen); the cookie is only a key to it. So logging out
deletes the row and the old cookie opens nothing, a user's sessions can be listed and revoked, and an
expired row is refused (and swept). The token itself is never stored: a copy of the database does not
log anybody in. Each session has a short public id (a prefix of a second hash) to name it in listings.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SESSIONS_FILE = "sessions.sqlite"
LAST_SEEN_EVERY = 60.0  # seconds between updates of a session's last-seen time


@dataclass(frozen=True)
class SessionInfo:
    id: str  # public: safe to show and to revoke by; not the cookie
    user: str
    created: float
    expires: float
    last_seen: float


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _public_id(key: str) -> str:
    return hashlib.sha256(f"id:{key}".encode()).hexdigest()[:16]


class SessionStore:
    """The sessions of one server. `path` None: in memory (tests, throwaway servers)."""

    def __init__(self, path: Path | None, seconds: float) -> None:
        self.seconds = seconds
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        with self._lock:
            if path is not None:  # WAL without a sync per commit: a crash may lose a last-seen time, no more
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, id TEXT NOT NULL, "
                "user TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, last_seen REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user)")

    def create(self, user: str, now: float | None = None) -> str:
        """A new session for `user`; returns the cookie token (shown once, never stored)."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        key = _key(token)
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (key, _public_id(key), user, now, now + self.seconds, now),
            )
        return token

    def user(self, token: str | None, now: float | None = None) -> str | None:
        """The user of a live session, or None (unknown, revoked or expired)."""
        if not token or len(token) > 200:
            return None
        now = time.time() if now is None else now
        key = _key(token)
        with self._lock:
            row = self._db.execute(
                "SELECT user, expires, last_seen FROM sessions WHERE key=?", (key,)
            ).fetchone()
            if row is None:
                return None
            if row[1] < now:
                self._db.execute("DELETE FROM sessions WHERE key=?", (key,))
                return None
            if now - row[2] > LAST_SEEN_EVERY:  # a write per minute, not per request
                self._db.execute("UPDATE sessions SET last_seen=? WHERE key=?", (now, key))
        return str(row[0])

    def revoke_token(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE key=?", (_key(token),)).rowcount > 0

    def revoke(self, user: str, session_id: str) -> bool:
        """End one of `user`'s sessions by its public id; False when they have none by that id."""
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE user=? AND id=?", (user, session_id))
            return cur.rowcount > 0

    def revoke_user(self, user: str) -> int:
        """End every session of `user` (removed, or their password reset); how many there were."""
        with self._lock:
            return int(self._db.execute("DELETE FROM sessions WHERE user=?", (user,)).rowcount)

    def list(self, user: str, now: float | None = None) -> list[SessionInfo]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT id, user, created, expires, last_seen FROM sessions WHERE user=? AND expires>=? "
                "ORDER BY created",
                (user, now),
            ).fetchall()
        return [SessionInfo(*row) for row in rows]

    def id_of(self, token: str | None) -> str | None:
        return _public_id(_key(token)) if token else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
