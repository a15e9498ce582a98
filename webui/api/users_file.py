"""The users file (`--users-file`): accounts with hashed passwords and roles, and their API keys.

JSON, owner-only (mode 0600), written atomically (webui.core.atomic) under an advisory lock on a
sibling `<file>.lock`, so the server and `python -m webui.users` can both change it without losing
each other's edits. It never holds a password or a key, only their hashes:

    {
      "format": "sfumato-users", "version": 1,
      "users": {"alice": {"role": "admin", "password": "scrypt$16384$8$1$<salt>$<key>", "created": 1.7e9}},
      "keys": {"3f9c0a1b2c4d": {"user": "alice", "name": "render script", "sha256": "<hex>",
                                "created": 1.7e9, "last_used": null}}
    }

An API key is `sfk_<id>_<secret>` (the id is public, the secret 256 random bits); the file keeps the
SHA-256 of the whole key, so a copy of the file opens nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from webui.api.passwords import is_hash

FORMAT = "sfumato-users"
VERSION = 1
ROLES = ("admin", "user", "viewer")
KEY_PREFIX = "sfk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
MAX_KEY_NAME = 100
MAX_KEYS_PER_USER = 50
RESERVED_NAMES = ("anonymous",)  # the shared local user without a login


class UsersFileError(ValueError):
    """A users file that cannot be read or a change it cannot take; the message says which and why."""


@dataclass(frozen=True)
class UserEntry:
    role: str
    password: str  # the scrypt hash (webui.api.passwords)
    created: float


@dataclass(frozen=True)
class KeyEntry:
    id: str
    user: str
    name: str
    sha256: str
    created: float
    last_used: float | None = None


@dataclass(frozen=True)
class UsersData:
    users: Mapping[str, UserEntry] = field(default_factory=dict)
    keys: Mapping[str, KeyEntry] = field(default_factory=dict)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsersFileError(
            f"user name {str(name)[:70]!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit"
        )
    if name in RESERVED_NAMES or name.startswith("browser-"):
        raise UsersFileError(f"user name {name!r} is reserved (the identities used without a login)")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsersFileError(f"role {str(role)[:40]!r}: one of {', '.join(ROLES)}")
    return role


def check_key_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_KEY_NAME or any(ord(c) < 32 for c in name):
        raise UsersFileError(f"key name: 1-{MAX_KEY_NAME} printable characters")
    return name


def key_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_key() -> tuple[str, str]:
    """(id, the whole key): shown once to its owner, never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The id part of an `sfk_<id>_<secret>` key, or None when it has not that shape."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    return key_id if sep and secret and _KEY_ID.match(key_id) else None


def matches(entry: KeyEntry, token: str) -> bool:
    return hmac.compare_digest(entry.sha256, key_hash(token))


# -- reading and writing ---------------------------------------------------------------------------


def parse(text: str, where: str) -> UsersData:
    """The file's content, checked entry by entry; UsersFileError names the file and the entry."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise UsersFileError(f"{where}: not valid JSON ({e.msg}, line {e.lineno})") from e
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: expected a JSON object")
    if raw and raw.get("format") != FORMAT:
        raise UsersFileError(f'{where}: not a Sfumato users file ("format" is not {FORMAT!r})')
    if raw.get("version", VERSION) != VERSION:
        raise UsersFileError(f"{where}: version {raw.get('version')!r} is not supported (expected {VERSION})")
    users: dict[str, UserEntry] = {}
    for name, entry in _object(raw.get("users"), where, "users").items():
        at = f"{where}: users.{name}"
        try:
            check_name(name)
            check_role(str(entry.get("role")) if isinstance(entry, dict) else "")
        except UsersFileError as e:
            raise UsersFileError(f"{at}: {e}") from e
        password = entry.get("password")
        if not isinstance(password, str) or not is_hash(password):
            raise UsersFileError(
                f"{at}: password must be a scrypt hash (set it with python -m webui.users passwd)"
            )
        users[name] = UserEntry(entry["role"], password, _number(entry.get("created"), 0.0))
    keys: dict[str, KeyEntry] = {}
    for key_id, entry in _object(raw.get("keys"), where, "keys").items():
        at = f"{where}: keys.{key_id}"
        if not _KEY_ID.match(key_id) or not isinstance(entry, dict):
            raise UsersFileError(f"{at}: not a key entry")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UsersFileError(f"{at}: sha256 must be 64 hex digits")
        user, name = entry.get("user"), entry.get("name", "")
        if not isinstance(user, str) or not isinstance(name, str):
            raise UsersFileError(f"{at}: user and name must be strings")
        last = entry.get("last_used")
        keys[key_id] = KeyEntry(
            key_id,
            user,
            name,
            digest,
            _number(entry.get("created"), 0.0),
            None if last is None else _number(last, 0.0),
        )
    return UsersData(users, keys)


def _object(value: Any, where: str, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsersFileError(f"{where}: {name} must be an object")
    return value


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def dump(data: UsersData) -> bytes:
    out = {
        "format": FORMAT,
        "version": VERSION,
        "users": {
            n: {"role": u.role, "password": u.password, "created": u.created}
            for n, u in sorted(data.users.items())
        },
        "keys": {
            k.id: {
                "user": k.user,
                "name": k.name,
                "sha256": k.sha256,
                "created": k.created,
                "last_used": k.last_used,
            }
            for k in sorted(data.keys.values(), key=lambda k: (k.user, k.created, k.id))
        },
    }
    return (json.dumps(out, indent=2) + "\n").encode("utf-8")


def read(path: Path) -> UsersData:
    """The file's content; a missing file is an empty one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UsersData()
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    return parse(text, str(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory lock (one writer at a time is then the user's care)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write(path: Path, data: UsersData) -> None:
    """Replace the file atomically; it is created owner-only and kept so."""
    from webui.core.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # created 0600 first, so write_atomic keeps that mode from the start
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    write_atomic(path, dump(data))


def update(path: Path, change: Callable[[UsersData], UsersData]) -> UsersData:
    """Read, change and write the file under its lock (the server and the CLI may both be editing)."""
    with _locked(path):
        before = read(path)
        after = change(before)
        if after != before:
            write(path, after)
        return after


# -- changes (pure: each returns a new UsersData or raises UsersFileError) -----------------------------


def add_user(
    data: UsersData, name: str, role: str, password_hash: str, now: float | None = None
) -> UsersData:
    check_name(name)
    check_role(role)
    if name in data.users:
        raise UsersFileError(f"user {name!r} already exists")
    entry = UserEntry(role, password_hash, time.time() if now is None else now)
    return replace(data, users={**data.users, name: entry})


def remove_user(data: UsersData, name: str) -> UsersData:
    """The user and all their keys go."""
    _need(data, name)
    users = {n: u for n, u in data.users.items() if n != name}
    keys = {k: e for k, e in data.keys.items() if e.user != name}
    return UsersData(users, keys)


def set_role(data: UsersData, name: str, role: str) -> UsersData:
    check_role(role)
    entry = _need(data, name)
    return replace(data, users={**data.users, name: replace(entry, role=role)})


def set_password(data: UsersData, name: str, password_hash: str) -> UsersData:
    entry = _need(data, name)
    return replace(data, users={**data.users, name: replace(entry, password=password_hash)})


def add_key(
    data: UsersData, user: str, name: str, now: float | None = None
) -> tuple[UsersData, KeyEntry, str]:
    """A new key for `user`: (data, its entry, the whole key to show once)."""
    name = check_key_name(name)
    if sum(1 for k in data.keys.values() if k.user == user) >= MAX_KEYS_PER_USER:
        raise UsersFileError(f"user {user!r} already has {MAX_KEYS_PER_USER} keys: revoke one first")
    key_id, token = new_key()
    entry = KeyEntry(key_id, user, name, key_hash(token), time.time() if now is None else now)
    return replace(data, keys={**data.keys, key_id: entry}), entry, token


def remove_key(data: UsersData, key_id: str) -> UsersData:
    if key_id not in data.keys:
        raise UsersFileError(f"key {key_id[:40]!r} not found")
    return replace(data, keys={k: e for k, e in data.keys.items() if k != key_id})


def touch_keys(data: UsersData, used: Mapping[str, float]) -> UsersData:
    """Record last-used times (keys revoked meanwhile are skipped)."""
    keys = dict(data.keys)
    for key_id, when in used.items():
        if key_id in keys:
            keys[key_id] = replace(keys[key_id], last_used=when)
    return replace(data, keys=keys)


def _need(data: UsersData, name: str) -> UserEntry:
    entry = data.users.get(name)
    if entry is None:
        raise UsersFileError(f"user {name[:70]!r} not found")
    return entry
