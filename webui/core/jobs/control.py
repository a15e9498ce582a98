"""Cancel and skip through the store: the token a worker hands to the engine also reads the job's row.

A cancel or skip may come from any process that opens the job store (another server process, a
dispatcher); the worker running the job learns of it from `JobStore.control`, read at most every
`interval` seconds when the sampling loop checks its token. The process that runs the job also sets
the token directly (`apply`), so a local cancel stops the next step without waiting for a read.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from webui.core.sampling.loop import CancelToken

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between two reads of a running job's cancel/skip requests


@dataclass
class StoreCancelToken(CancelToken):
    """A CancelToken that also obeys the cancel/skip requests stored on job `job_id` in `store`."""

    store: Any = None  # webui.core.jobs.store.JobStore (control(job_id) -> (cancel, skips))
    job_id: str = ""
    interval: float = POLL_INTERVAL
    cancel_seen: bool = False  # a user cancel (from this process or another) reached this run
    _skips_seen: int = 0
    _polled_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, cancel: bool, skips: int) -> None:
        """A user's cancel (keeps the partly finished pictures) and skips up to number `skips` of this
        attempt; a skip already applied (by number) is not applied twice."""
        with self._lock:
            if cancel and not self.cancel_seen:
                self.cancel_seen = True
                self.interrupt()
            if skips > self._skips_seen:
                self._skips_seen = skips
                self.skip()

    def poll(self, force: bool = False) -> None:
        """Read the stored requests (unless read less than `interval` seconds ago)."""
        if self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._polled_at < self.interval:
            return
        self._polled_at = now
        try:
            cancel, skips = self.store.control(self.job_id)
        except sqlite3.Error as e:  # a busy or failing store: the local path still works
            log.warning("job %s: cannot read its cancel/skip requests: %s", self.job_id, e)
            return
        self.apply(cancel, skips)

    def requests(self) -> tuple[bool, int, bool]:
        """(user cancel seen, skips seen, stop keeping nothing: a shutdown or a lost lease), read now: what
        a dispatcher passes on to the remote worker that runs the job."""
        self.poll()
        with self._lock:
            cancel, skips = self.cancel_seen, self._skips_seen
        return cancel, skips, self._interrupt.is_set() and not self.keeps_partial

    @property
    def interrupted(self) -> bool:
        self.poll()
        return super().interrupted

    def take_skip(self) -> bool:
        self.poll()
        return super().take_skip()
