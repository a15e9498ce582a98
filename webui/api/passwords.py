"""Password hashes for the users file: scrypt from the standard library, never the password itself.

A hash is one string, `scrypt$<n>$<r>$<p>$<salt>$<key>` (salt and key in unpadded base64url), so the
cost parameters travel with it and can be raised later without breaking older entries. Checking a
password costs about 50 ms of CPU and 16 MiB: fine for a login, too much for every request a script
sends with Basic auth, so `PasswordCache` remembers which (user, password) pairs were proven right, as
an HMAC under a key that lives only in this process, tied to the hash it was checked against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1  # the "interactive login" cost: ~50 ms, 16 MiB
KEY_BYTES = 32
SALT_BYTES = 16
_MAXMEM = 128 * 2**20
MAX_PASSWORD = 1024  # characters; longer passwords are refused, not truncated
MIN_PASSWORD = 8


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long, or empty)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_new_password(password: str, minimum: int = MIN_PASSWORD) -> None:
    if len(password) < minimum:
        raise PasswordError(f"password: at least {minimum} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"password: at most {MAX_PASSWORD} characters")


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=KEY_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def is_hash(text: str) -> bool:
    """Whether `text` has the shape of a hash this module writes (parameters within bounds)."""
    return _parse(text) is not None


def _parse(text: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, TypeError):
        return None
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * r * n > _MAXMEM:
        return None
    if len(salt) < 8 or len(key) < 16:
        return None
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (a hash from hash_password). Constant time in the key."""
    parsed = _parse(stored)
    if parsed is None or len(password) > MAX_PASSWORD:
        return False
    n, r, p, salt, key = parsed
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(key))
    return hmac.compare_digest(got, key)


class PasswordCache:
    """Remembers proven (user, password, stored hash) triples, as HMACs under a per-process key, so a
    script's Basic header is checked with scrypt once, not on every request. A changed hash (a new
    password) no longer matches its entry; `forget(user)` drops one user's."""

    def __init__(self, size: int = 1024) -> None:
        self._key = secrets.token_bytes(32)
        self._size = size
        self._proven: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._dummy: str | None = None

    def _mac(self, user: str, password: str, stored: str) -> bytes:
        text = "\0".join((user, password, stored)).encode("utf-8", "replace")
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def verify(self, user: str, password: str, stored: str | None) -> bool:
        """Whether `password` is `user`'s (stored None: an unknown user, checked against a dummy hash so
        the answer takes as long as for a real one)."""
        if stored is None:
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_urlsafe(16))
            verify_password(password, self._dummy)
            return False
        mac = self._mac(user, password, stored)
        with self._lock:
            known = self._proven.get(user)
        if known is not None and hmac.compare_digest(known, mac):
            return True
        if not verify_password(password, stored):
            return False
        with self._lock:
            if len(self._proven) >= self._size:
                self._proven.pop(next(iter(self._proven)))
            self._proven[user] = mac
        return True

    def forget(self, user: str) -> None:
        with self._lock:
            self._proven.pop(user, None)
