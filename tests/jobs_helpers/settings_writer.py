"""Saves settings in a loop, forever, for the kill -9 test: python -m tests.jobs_helpers.settings_writer PATH

Each save writes {"counter": n + 1, "padding": <64 KiB>, ...} continuing from the file's counter;
prints "ready" after the first save.
"""

from __future__ import annotations

import sys
from pathlib import Path

from webui.core.settings import Settings


def main(path: str) -> None:
    settings = Settings.load(Path(path))
    n = int(settings.as_dict().get("counter", 0))  # go on from the last save that survived
    first = True
    while True:
        n += 1
        settings = settings.updated({"counter": n, "padding": "x" * 65536, "jpeg_quality": 1 + n % 100})
        settings.save()
        if first:
            print("ready", flush=True)
            first = False


if __name__ == "__main__":
    main(sys.argv[1])
