"""Waiting for jobs without holding threads, and the thread budgets of the HTTP routes.

A blocking `/sdapi/v1/txt2img` waits for its job, and an SSE stream for the next event, for as long as
the job takes. Done in a worker thread, each wait held one of anyio's 40 default threads, which Gradio's
sync handlers and every other route share: 40 waiting clients stalled the whole server. Here a wait is
a coroutine that polls the queue's in-memory event counter (`JobQueue.event_position`) and reads the
store only when something changed (or every `reread` seconds, for writers in other processes).

Short store calls run on their own CapacityLimiter (`db`), the CPU work of submitting and answering
(decoding, encoding images) on another (`work`), scripts that run whole series of jobs on a third
(`script`): none can starve the others, and none waits for the default pool Gradio's handlers use.
Each user may have at most `per_user` blocking waits in flight; one more gets 429 (TooManyWaits).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
DB_THREADS = 8
SCRIPT_THREADS = 4
WORK_THREADS = 4
DEFAULT_WAITS_PER_USER = 64


class TooManyWaits(Exception):
    """The caller already has its limit of blocking requests in flight (API: 429)."""


class Waiting:
    def __init__(
        self,
        queue: Any,
        *,
        per_user: int = DEFAULT_WAITS_PER_USER,
        poll: float = 0.1,
        reread: float = 2.0,
        db_threads: int = DB_THREADS,
        script_threads: int = SCRIPT_THREADS,
        work_threads: int = WORK_THREADS,
    ) -> None:
        self.queue = queue
        self.per_user = per_user
        self.poll, self.reread = poll, reread
        self.db_limiter = anyio.CapacityLimiter(db_threads)
        self.script_limiter = anyio.CapacityLimiter(script_threads)
        self.work_limiter = anyio.CapacityLimiter(work_threads)
        self._in_flight: dict[str, int] = {}  # touched only on the event loop

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """A short store call (submit, get, list, cancel) on the store's own threads."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self.db_limiter)

    async def work(self, fn: Callable[..., T], *args: Any) -> T:
        """Short CPU work of job submission and results (decode inputs, build the request, encode the
        images) on its own threads, so submitting never waits for Gradio's handlers."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self.work_limiter)

    async def script(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking script run (it submits and waits for its own jobs) on the scripts' threads."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self.script_limiter)

    @contextmanager
    def slot(self, user: str) -> Iterator[None]:
        """Count one blocking request of `user` for its duration; TooManyWaits past the limit."""
        count = self._in_flight.get(user, 0)
        if count >= self.per_user:
            raise TooManyWaits(
                f"{user!r} already has {count} blocking requests waiting (limit {self.per_user}); wait for "
                "them, or submit with POST /api/v1/jobs and follow /api/v1/jobs/<id>/events"
            )
        self._in_flight[user] = count + 1
        try:
            yield
        finally:
            left = self._in_flight[user] - 1
            if left:
                self._in_flight[user] = left
            else:
                del self._in_flight[user]

    def in_flight(self, user: str) -> int:
        return self._in_flight.get(user, 0)

    async def finished(self, job_id: str, timeout: float) -> Any:
        """The job's JobInfo once it is done, failed or cancelled; after `timeout`, its current state."""
        deadline = time.monotonic() + timeout
        seen: tuple[int, bool] | None = None
        read_at = 0.0
        while True:
            now = time.monotonic()
            position = self.queue.event_position(job_id)
            if position != seen or now - read_at >= self.reread or now >= deadline:
                info = await self.db(self.queue.get, job_id)
                seen, read_at = position, now
                if info.state.finished or now >= deadline:
                    return info
            await asyncio.sleep(self.poll)

    async def events(self, job_id: str, after: int, timeout: float) -> list[Any]:
        """JobQueue.events(job_id, after, timeout) without a thread held while nothing happens."""
        batch: list[Any] = await self.db(self.queue.events, job_id, after, 0)
        deadline = time.monotonic() + timeout
        while not batch:
            seq, final = self.queue.event_position(job_id)
            if final and seq <= after:
                return []  # finished, nothing newer: the caller says so and ends
            if time.monotonic() >= deadline:
                return []
            await asyncio.sleep(self.poll)
            if self.queue.event_position(job_id)[0] > after:
                batch = await self.db(self.queue.events, job_id, after, 0)
        return batch
