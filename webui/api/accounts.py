"""Who may log in, with which role, and their API keys: the running server's view of its accounts.

Users come from two places: the users file (`--users-file`, hashed passwords, a role each: admin, user
or viewer) and A1111's flags (`--api-auth`, `--gradio-auth`, `--gradio-auth-path`, SFUMATO_AUTH; role
"admin" when named by `--admin`, else "user"). A name may not be in both. `--admin` also promotes
users of the file.

The file is re-read when it changes on disk (size, mtime or inode), so `python -m webui.users` edits a
running server's accounts; a file that turns unreadable keeps the last good copy (logged). API keys are
kept in the users file, or, with the flags alone, in `<cache>/api-keys.json` (same format, no users).
A key's last-used time is written at most once a minute. A user removed or given a new password, by
any of these ways, is logged out everywhere (`on_logout`: the server's session store).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from webui.api import users_file as uf
from webui.api.passwords import PasswordCache, check_new_password, hash_password

log = logging.getLogger("sfumato.accounts")
KEYS_FILE = "api-keys.json"
LAST_USED_EVERY = 60.0


class AccountError(ValueError):
    """A change the accounts cannot take (unknown user, a flag user, a bad name or role)."""


class Accounts:
    def __init__(
        self,
        flag_users: Mapping[str, str] | None = None,
        flag_admins: Iterable[str] = (),
        users_file: Path | None = None,
        keys_file: Path | None = None,
    ) -> None:
        self.flag_users = dict(flag_users or {})
        self.flag_admins = frozenset(flag_admins)
        self.users_file = users_file
        self.store = users_file or keys_file  # where keys (and file users) live; None: in memory
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._data = uf.UsersData()
        self._passwords = PasswordCache()
        self._used: dict[str, float] = {}
        self._used_flushed = time.monotonic()
        # called with the name of a file user who was removed or got a new password (here, through the
        # API, the UI or the CLI): their login sessions end
        self.on_logout: list[Callable[[str], object]] = []
        if self.store is not None:
            self._data = uf.read(self.store)  # UsersFileError at start: the server refuses to start
            self._stamp = _stamp(self.store)
        clash = sorted(set(self._file_users()) & set(self.flag_users))
        if clash:
            raise uf.UsersFileError(
                f"--users-file: {', '.join(clash)} also given by --api-auth/--gradio-auth: keep one of them"
            )

    # -- reading -------------------------------------------------------------------------------------
    def _current(self) -> uf.UsersData:
        """The store's content, re-read when the file changed (the last good copy if it turned bad)."""
        if self.store is None:
            return self._data
        stamp = _stamp(self.store)
        if stamp != self._stamp:
            with self._lock:
                try:
                    self._replace(uf.read(self.store))
                except uf.UsersFileError as e:
                    log.error("%s; keeping the accounts read before", e)
                self._stamp = stamp
        return self._data

    def _replace(self, data: uf.UsersData) -> None:
        """Take `data` as the accounts (under the lock); users gone or with a new password are logged out."""
        old, self._data = self._data, data
        if self.users_file is None:
            return
        for name, entry in old.users.items():
            now = data.users.get(name)
            if now is None or now.password != entry.password:
                self._passwords.forget(name)
                for callback in self.on_logout:
                    callback(name)

    def refresh(self) -> None:
        """Take in a change of the file on disk now (it is otherwise taken in when next read)."""
        self._current()

    def _file_users(self, data: uf.UsersData | None = None) -> Mapping[str, uf.UserEntry]:
        if self.users_file is None:
            return {}
        return (data or self._data).users

    def names(self) -> list[str]:
        return sorted({*self.flag_users, *self._file_users(self._current())})

    def exists(self, user: str) -> bool:
        return user in self.flag_users or user in self._file_users(self._current())

    def role(self, user: str) -> str | None:
        """ "admin", "user" or "viewer"; None for no such user."""
        if user in self.flag_users:
            return "admin" if user in self.flag_admins else "user"
        entry = self._file_users(self._current()).get(user)
        if entry is None:
            return None
        return "admin" if user in self.flag_admins else entry.role

    def users(self) -> list[dict[str, object]]:
        """Every user: name, role, where it comes from ("file" or "flags"), created (file users)."""
        data = self._current()
        out: list[dict[str, object]] = [
            {"name": n, "role": self.role(n), "source": "flags", "created": None} for n in self.flag_users
        ]
        out += [
            {"name": n, "role": self.role(n), "source": "file", "created": e.created}
            for n, e in self._file_users(data).items()
        ]
        return sorted(out, key=lambda u: str(u["name"]))

    # -- proving who is asking ---------------------------------------------------------------------------
    def check_password(self, user: str, password: str) -> str | None:
        """The user when the password is theirs, else None (an unknown name costs a hash too). May take
        ~50 ms (scrypt): call it off the event loop."""
        if user in self.flag_users:
            ok = hmac.compare_digest(password.encode(), self.flag_users[user].encode())
            return user if ok else None
        entry = self._file_users(self._current()).get(user)
        ok = self._passwords.verify(user, password, entry.password if entry is not None else None)
        return user if ok else None

    def check_key(self, token: str) -> str | None:
        """The user an API key belongs to, or None (unknown, revoked, or its user is gone)."""
        key_id = uf.key_id_of(token)
        if key_id is None:
            return None
        entry = self._current().keys.get(key_id)
        if entry is None or not uf.matches(entry, token) or not self.exists(entry.user):
            return None
        self._note_use(key_id)
        return entry.user

    def _note_use(self, key_id: str) -> None:
        now = time.time()
        with self._lock:
            self._used[key_id] = now
            due = time.monotonic() - self._used_flushed > LAST_USED_EVERY
        if due:
            self.flush_last_used()

    def flush_last_used(self) -> None:
        with self._lock:
            used, self._used = self._used, {}
            self._used_flushed = time.monotonic()
        if used:
            try:
                self._change(lambda d: uf.touch_keys(d, used))
            except (OSError, uf.UsersFileError) as e:  # a last-used time is not worth failing a request
                log.warning("API keys: could not record their last use: %s", e)

    # -- changes -------------------------------------------------------------------------------------------
    def _change(self, change: Callable[[uf.UsersData], uf.UsersData]) -> uf.UsersData:
        if self.store is None:
            with self._lock:
                self._replace(change(self._data))
                return self._data
        data = uf.update(self.store, change)
        with self._lock:  # read again on next use: another writer may have come right after this one
            self._replace(data)
            self._stamp = None
        return data

    def _need_file(self) -> None:
        if self.users_file is None:
            raise AccountError("users are managed in a users file: start the server with --users-file")

    def _not_flag_user(self, name: str) -> None:
        if name in self.flag_users:
            raise AccountError(f"user {name!r} comes from --api-auth/--gradio-auth: change it there")

    def add_user(self, name: str, role: str, password: str) -> None:
        self._need_file()
        self._not_flag_user(name)
        check_new_password(password)
        hashed = hash_password(password)
        self._change(lambda d: uf.add_user(d, name, role, hashed))

    def remove_user(self, name: str) -> None:
        """The account and its keys go; so do its login sessions (the `on_logout` callbacks)."""
        self._need_file()
        self._not_flag_user(name)
        self._change(lambda d: uf.remove_user(d, name))

    def set_role(self, name: str, role: str) -> None:
        self._need_file()
        self._not_flag_user(name)
        self._change(lambda d: uf.set_role(d, name, role))

    def set_password(self, name: str, password: str) -> None:
        self._need_file()
        self._not_flag_user(name)
        check_new_password(password)
        hashed = hash_password(password)
        self._change(lambda d: uf.set_password(d, name, hashed))

    def create_key(self, user: str, name: str) -> tuple[uf.KeyEntry, str]:
        """A new key for `user`: (its entry, the whole key, to be shown exactly once)."""
        if not self.exists(user):
            raise AccountError(f"user {user[:70]!r} not found")
        made: list[tuple[uf.KeyEntry, str]] = []

        def change(d: uf.UsersData) -> uf.UsersData:
            data, entry, token = uf.add_key(d, user, name)
            made.append((entry, token))
            return data

        self._change(change)
        return made[-1]

    def api_keys(self, user: str | None = None) -> list[uf.KeyEntry]:
        """`user`'s keys (None: everybody's), oldest first; last-used times include unsaved ones."""
        with self._lock:
            pending = dict(self._used)
        out = [k for k in self._current().keys.values() if user is None or k.user == user]
        out = [replace(k, last_used=pending.get(k.id, k.last_used)) for k in out]
        return sorted(out, key=lambda k: (k.created, k.id))

    def key(self, key_id: str) -> uf.KeyEntry | None:
        return self._current().keys.get(key_id)

    def revoke_key(self, key_id: str) -> None:
        self._change(lambda d: uf.remove_key(d, key_id))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
