"""What a queue's workers hold in memory: the worker slots (one per device) and the job each one runs,
and the model-aware pick (a job goes to the worker that already holds its checkpoint, within a bound).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from webui.core.engine import Engine
from webui.core.jobs.control import StoreCancelToken
from webui.core.jobs.info import JobImage, JobInfo, JobProgressInfo
from webui.core.jobs.store import JobRow

PROGRESS_SAVE_INTERVAL = 1.0  # seconds between progress writes to the store (events carry every step)


@dataclass
class WorkerSlot:
    """One worker: its id (recorded on the jobs it claims), its engine (device, model cache), its thread."""

    id: str
    engine: Engine
    thread: threading.Thread | None = None
    last_checkpoint: str | None = None  # the checkpoint its last job asked for (what its cache holds)
    remote: Any = None  # a remote worker (ray_pool.RayWorker) this slot's thread dispatches to; None: engine
    avoid: str | None = None  # a job whose run died on this worker: left to another idle worker
    draining: bool = False  # being removed: it finishes its job and takes no other


@dataclass
class Running:
    """A job a worker of this process is on, as only this process knows it."""

    base: JobInfo
    token: StoreCancelToken = field(default_factory=StoreCancelToken)
    progress: JobProgressInfo = field(default_factory=JobProgressInfo)
    images: tuple[JobImage, ...] = ()
    cancel_requested: bool = False
    shutdown: bool = False
    lost: bool = False  # its lease ran out (another worker may run it now): its outcome is not recorded
    finished: bool = False
    saved_at: float = 0.0
    saved_batch: int = 0
    earlier: tuple[JobImage, ...] = ()  # images of an attempt cut short (kill -9, shutdown), not yet re-made

    @property
    def worker(self) -> str:
        return self.base.worker or ""

    def info(self) -> JobInfo:
        return dataclasses.replace(self.base, progress=self.progress, images=self.images)


def _checkpoint(row: JobRow) -> str | None:
    value = row.request.get("checkpoint")
    return str(value) if value else None


def warm_pick(
    slot: WorkerSlot, workers: Sequence[WorkerSlot], warm_wait: float, now: float | None = None
) -> Callable[[list[JobRow]], str | None] | None:
    """For JobStore.claim_next: which waiting job `slot` takes. In fair order, the first job that
    `slot` holds the checkpoint of, or that no other worker holds it of, or that has waited
    `warm_wait` seconds or more (so nobody starves); a job another worker is warm for is left to it
    meanwhile. None from the returned function: nothing for `slot` now. None: no preference (one worker)."""
    others = {w.last_checkpoint for w in workers if w.id != slot.id and w.last_checkpoint}
    if not others or warm_wait <= 0:
        return None
    t = time.time() if now is None else now

    def pick(waiting: list[JobRow]) -> str | None:
        for row in waiting:
            wanted = _checkpoint(row)
            if wanted == slot.last_checkpoint or wanted not in others or t - row.created >= warm_wait:
                return row.id
        return None

    return pick


def worker_state(slot: WorkerSlot, job: str | None) -> dict[str, Any]:
    """One device worker for /api/v1/workers: id, kind ("ray" or "local"), device, node and pid (Ray),
    state ("idle", "running", "draining", "restarting") and the id of the job it runs."""
    remote = slot.remote
    state = "draining" if slot.draining else "running" if job else "idle"
    if remote is not None and remote.broken:
        state = "restarting"
    entry: dict[str, Any] = {"id": slot.id, "kind": "ray" if remote is not None else "local", "state": state,
                             "job": job}  # fmt: skip
    if remote is not None:
        entry.update(name=remote.name, device=remote.info.device, node=remote.info.node, pid=remote.info.pid,
                     checkpoints=len(remote.info.checkpoints))  # fmt: skip
    else:
        entry.update(device=str(slot.engine.manager.precision.device))
    return entry
