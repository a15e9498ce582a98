"""sha256 on its own thread while a download runs: hashlib releases the GIL for large buffers, so the
hash of one chunk overlaps the network read and the disk write of the next (on loopback, hashing in line
made the transfer take twice as long as the copy itself)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DEPTH = 8  # chunks waiting to be hashed at most (8 MB with 1 MB chunks): the reader waits beyond it


@contextmanager
def hashed_in_background(hasher: Any) -> Iterator[Callable[[bytes], None]]:
    """A `feed(chunk)` that queues bytes for `hasher.update` on a worker thread, in order. On leaving the
    block (normally or by an exception) every queued chunk has been hashed and the thread has ended, so
    `hasher` is then exactly as if each chunk had been passed to its `update` in line."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=DEPTH)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            while (chunk := chunks.get()) is not None:
                hasher.update(chunk)
        except BaseException as e:  # reported to the feeding thread at its next chunk or at the end
            failed.append(e)
            while chunks.get() is not None:  # drain, so the feeder never blocks on a full queue
                pass

    thread = threading.Thread(target=work, name="download-sha256", daemon=True)
    thread.start()

    def feed(chunk: bytes) -> None:
        if failed:
            raise failed[0]
        chunks.put(chunk)

    try:
        yield feed
    finally:
        chunks.put(None)
        thread.join()
    if failed:
        raise failed[0]
