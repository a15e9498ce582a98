"""Which extensions the user switched off: `<data dir>/extensions.json`, written atomically.

    {"disabled": ["name", ...]}

Everything not listed is enabled. Changes apply on the next load (restart or reload). A corrupt file is
set aside (renamed *.corrupt) and treated as empty, so a bad edit never keeps the app from starting.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

STATE_FILE = "extensions.json"


class ExtensionState:
    def __init__(self, path: Path) -> None:
        self.path = path

    def disabled(self) -> frozenset[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError):
            self._set_aside()
            return frozenset()
        names = data.get("disabled") if isinstance(data, dict) else None
        if not isinstance(names, list):
            self._set_aside()
            return frozenset()
        return frozenset(n for n in names if isinstance(n, str))

    def set_enabled(self, name: str, enabled: bool) -> None:
        names = set(self.disabled())
        if enabled:
            names.discard(name)
        else:
            names.add(name)
        self._write({"disabled": sorted(names)})

    def _write(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _set_aside(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
