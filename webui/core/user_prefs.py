"""Each user's own interface choices (the theme: light, dark or follow the system), in `ui-users.json`.

The file sits in the data folder beside config.json and maps a user name to that user's choices:

    {"users": {"ann": {"theme": "dark"}, "bob": {"theme": "light"}}}

Without logins there is one local user (the name the server gives every request then). These are
personal choices, not shared state: any signed-in user may change their own, and nobody else's.
Writes are atomic (webui.core.atomic); each change re-reads the file under the store's lock and changes
only that user's entry, so two users saving at once never undo each other. A file that cannot be read
gives every user the defaults (`problem` says why); the next change moves it aside
(`ui-users.json.corrupt-<time>`) before writing, so nothing is lost by overwriting it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from webui.core.atomic import write_atomic
from webui.core.types import RequestError

log = logging.getLogger("sfumato.user_prefs")

FILE_NAME = "ui-users.json"
THEMES = ("system", "light", "dark")
DEFAULT_THEME = "system"
MAX_USER_CHARS = 200  # a user name longer than this is not a name any login gives


def check_theme(value: Any) -> str:
    """The theme as stored, or RequestError naming `theme`."""
    if not isinstance(value, str) or value not in THEMES:
        raise RequestError("theme", f"must be one of {', '.join(THEMES)}; got {value!r}")
    return value


class UserPrefsStore:
    """The users' interface choices in one file (one store per server; nothing global)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.problem: str | None = None

    def _read(self) -> dict[str, dict[str, Any]] | None:
        """{user: choices}; None when the file exists but is not a users file (problem says why)."""
        try:
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            self.problem = None
            return {}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            self.problem = f"{self.path} cannot be read ({type(e).__name__}: {e}); default themes are used"
            log.warning("%s", self.problem)
            return None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            self.problem = f'{self.path}: expected {{"users": {{...}}}}; default themes are used'
            log.warning("%s", self.problem)
            return None
        self.problem = None
        return {k: dict(v) for k, v in users.items() if isinstance(k, str) and isinstance(v, Mapping)}

    def theme(self, user: str) -> str:
        """The user's theme ("system" when they never chose one, or the stored value is not a theme)."""
        with self._lock:
            value = (self._read() or {}).get(user, {}).get("theme")
        return value if isinstance(value, str) and value in THEMES else DEFAULT_THEME

    def set_theme(self, user: str, theme: Any) -> str:
        """Store the user's theme (RequestError for a value that is not a theme); returns it."""
        chosen = check_theme(theme)
        if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
            raise RequestError("user", "is not a user name")
        with self._lock:
            users = self._read()
            if users is None:
                self._set_aside()
                users = {}
            users.setdefault(user, {})["theme"] = chosen
            text = json.dumps({"users": users}, indent=2, ensure_ascii=False, sort_keys=True)
            write_atomic(self.path, text.encode("utf-8"))
            self.problem = None
        return chosen

    def _set_aside(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as e:
            raise OSError(f"{self.path} is damaged and could not be moved aside ({e}); nothing saved") from e
        log.warning("%s was damaged; moved to %s", self.path, aside.name)
