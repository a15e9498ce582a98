"""Adding and removing a job queue's remote workers while jobs run (JobQueue's part for
`/api/v1/workers`): new workers get a dispatcher thread at once; a removed one drains (finishes its job,
takes no other) and is then stopped."""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from webui.core.engine import Engine
from webui.core.jobs.running import Running, WorkerSlot, worker_state
from webui.core.jobs.store import this_process_prefix

log = logging.getLogger("webui.core.jobs.queue")


class QueueClosed(RuntimeError):
    """The queue was closed; it takes no more jobs (API: 503)."""


class WorkersFixed(RuntimeError):
    """These workers cannot be added or removed while the server runs (API: 409)."""


class WorkerScaling:
    """The scaling half of JobQueue (which sets these attributes and runs `_work`)."""

    engine: Engine
    _grow: Callable[[int], Sequence[Any]] | None
    _shrink: Callable[[Any], None] | None
    _cond: threading.Condition
    _workers: builtins.list[WorkerSlot]
    _runs: dict[str, Running]
    _closing: bool
    _started: bool
    _tag: str
    _added: int

    def _work(self, slot: WorkerSlot) -> None:
        raise NotImplementedError

    def add_workers(self, count: int) -> tuple[str, ...]:
        """Start `count` more remote workers (blocks until they are ready) and give each a dispatcher;
        their worker ids. WorkersFixed when these workers cannot grow (in-process devices)."""
        if self._grow is None:
            raise WorkersFixed(
                "the workers are this server's own devices (--device-ids, --workers): a restart with "
                "other flags changes them; start the server with --ray or --ray-local to add workers"
            )
        if self._closing:
            raise QueueClosed("the job queue is closed")
        remotes = self._grow(count)
        with self._cond:
            slots = []
            for remote in remotes:
                slots.append(WorkerSlot(f"{this_process_prefix()}{self._tag}-ray{self._added}", self.engine,
                                        remote=remote))  # fmt: skip
                self._added += 1
            self._workers = [*self._workers, *slots]
            if self._started:
                for slot in slots:
                    slot.thread = threading.Thread(target=self._work, args=(slot,), name=f"sfumato-{slot.id}",
                                                   daemon=True)  # fmt: skip
                    slot.thread.start()
            self._cond.notify_all()
        log.info("job workers added: %s", ", ".join(s.id for s in slots))
        return tuple(s.id for s in slots)

    def remove_worker(self, worker_id: str) -> None:
        """Drain worker `worker_id`: it finishes the job it runs (if any), takes no other, and is then
        stopped. KeyError for an unknown id; WorkersFixed for the last worker or in-process devices."""
        with self._cond:
            slot = next((w for w in self._workers if w.id == worker_id), None)
            if slot is None:
                raise KeyError(worker_id)
            if slot.remote is None or self._shrink is None:
                raise WorkersFixed("only Ray workers can be removed while the server runs")
            if slot.draining:
                return
            if sum(1 for w in self._workers if not w.draining) <= 1:
                raise WorkersFixed("it is the last worker: add one first, or jobs would wait forever")
            slot.draining = True
            self._cond.notify_all()
        log.info("job worker %s: draining (it finishes its job, then stops)", worker_id)

    def worker_states(self) -> builtins.list[dict[str, Any]]:
        """Each device worker's id, kind, device, state and job (see running.worker_state)."""
        with self._cond:
            runs = {wid: run.base.id for wid, run in self._runs.items()}
            slots = list(self._workers)
        return [worker_state(slot, runs.get(slot.id)) for slot in slots]

    def _retire(self, slot: WorkerSlot) -> None:
        """A drained worker's dispatcher has ended: forget the slot and stop its remote worker."""
        with self._cond:
            self._workers = [w for w in self._workers if w is not slot]
            self._cond.notify_all()
        if slot.remote is not None and self._shrink is not None and not self._closing:
            self._shrink(slot.remote)
        log.info("job worker %s removed", slot.id)
