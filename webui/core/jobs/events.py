"""Per-job event lists for long-polling, in memory, bounded.

Each job gets numbered events (1, 2, ...). A reader asks for the events after the last number it saw
and waits for the next one. Memory stays bounded: each job keeps its last `keep_per_job` events, only
the newest event carries preview bytes, and the lists of finished jobs are dropped once more than
`keep_finished` of them exist or they finished more than `finished_ttl` seconds ago. A job whose list
was dropped (or that ran in an earlier process) starts again from a snapshot event of its state.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from webui.core.jobs.info import FINAL_EVENT_KINDS, JobEvent, JobInfo


@dataclass
class _Log:
    events: deque[JobEvent]
    next_seq: int = 1
    preview_png: bytes | None = None
    finished_at: float | None = None


class EventLog:
    def __init__(
        self, keep_per_job: int = 200, keep_finished: int = 256, finished_ttl: float = 600.0
    ) -> None:
        self.keep_per_job = keep_per_job
        self.keep_finished = keep_finished
        self.finished_ttl = finished_ttl
        self._cond = threading.Condition()
        self._logs: dict[str, _Log] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # job id -> finish time, oldest first

    def append(self, job_id: str, kind: str, info: JobInfo, preview_png: bytes | None = None) -> JobEvent:
        with self._cond:
            log = self._log(job_id)
            event = JobEvent(job_id, log.next_seq, kind, info, preview_png)
            log.next_seq += 1
            if preview_png is not None:
                log.preview_png = preview_png
                self._drop_old_previews(log)
            log.events.append(event)
            if kind in FINAL_EVENT_KINDS:
                now = time.monotonic()
                log.finished_at = now
                self._finished[job_id] = now
                self._finished.move_to_end(job_id)
                self._prune(now)
            self._cond.notify_all()
            return event

    def ensure(self, job_id: str, snapshot: JobInfo, kind: str) -> None:
        """Give a job that has no list yet one snapshot event of its current state."""
        with self._cond:
            if job_id not in self._logs:
                self.append(job_id, kind, snapshot)

    def last_seq(self, job_id: str) -> int:
        with self._cond:
            log = self._logs.get(job_id)
            return 0 if log is None else log.next_seq - 1

    def position(self, job_id: str) -> tuple[int, bool]:
        """(the newest event's number, whether the job's final event is in) without waiting; (0, False)
        for a job this log does not hold."""
        with self._cond:
            log = self._logs.get(job_id)
            return (0, False) if log is None else (log.next_seq - 1, log.finished_at is not None)

    def since(self, job_id: str, after_seq: int, timeout: float) -> list[JobEvent]:
        """Events with seq > after_seq, waiting up to timeout for the first one.

        Returns at once (possibly empty) when the job has finished and nothing newer exists.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                log = self._logs.get(job_id)
                if log is not None:
                    found = [e for e in log.events if e.seq > after_seq]
                    if found or log.finished_at is not None:
                        return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def wait_after(self, job_id: str, seq: int, timeout: float) -> None:
        """Block until the job has an event newer than seq, or timeout."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self.last_seq(job_id) <= seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def last_info(self, job_id: str) -> JobInfo | None:
        """The job info of the newest event, if the job has any."""
        with self._cond:
            log = self._logs.get(job_id)
            return log.events[-1].info if log is not None and log.events else None

    def latest_preview(self, job_id: str) -> bytes | None:
        with self._cond:
            log = self._logs.get(job_id)
            return None if log is None else log.preview_png

    def job_count(self) -> int:
        with self._cond:
            return len(self._logs)

    def _log(self, job_id: str) -> _Log:
        log = self._logs.get(job_id)
        if log is None:
            log = self._logs[job_id] = _Log(deque(maxlen=self.keep_per_job))
        return log

    @staticmethod
    def _drop_old_previews(log: _Log) -> None:
        for i, e in enumerate(log.events):
            if e.preview_png is not None:
                log.events[i] = dataclasses.replace(e, preview_png=None)

    def _prune(self, now: float) -> None:
        while self._finished:
            job_id, at = next(iter(self._finished.items()))
            if len(self._finished) <= self.keep_finished and now - at <= self.finished_ttl:
                break
            del self._finished[job_id]
            self._logs.pop(job_id, None)
