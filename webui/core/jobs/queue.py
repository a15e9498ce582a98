"""JobQueue: the one line every generation waits in, persistent, fair, with one worker per device.

    queue = JobQueue(engine, data_dir / "jobs.sqlite")
    queue.start()                                   # recover after a crash, then run jobs
    job = queue.submit(Txt2ImgRequest(prompt="a cat"), owner="alice")
    queue.wait(job.id).images                       # or long-poll queue.events(job.id, after_seq)

Jobs live in the store (SQLite); each worker thread (one per engine in `workers`: one per device)
claims them in fair order (round-robin between owners) under its worker id and a lease, runs them
through its own engine, and records the outcome. A heartbeat thread renews the leases, takes back the
jobs of workers whose lease ran out (another process that died), and cancel/skip requests are read from
the store, so they work whichever process runs the job. Live progress and previews are kept in memory
and published as numbered events per job.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from webui.core.engine import Engine
from webui.core.jobs.budget import check_work, over_budget_message, stored_work
from webui.core.jobs.codec import BACKGROUND_KINDS, JobRequest, kind_of, request_from_json, request_to_json
from webui.core.jobs.control import StoreCancelToken
from webui.core.jobs.events import EventLog
from webui.core.jobs.info import (
    JobEvent,
    JobImage,
    JobInfo,
    JobNotFound,
    JobProgressInfo,
    JobState,
    NotFinished,
    QueueFull,
    check_access,
)
from webui.core.jobs.remote import WorkerFault
from webui.core.jobs.reporter import JobReporter
from webui.core.jobs.running import Running, WorkerSlot, warm_pick
from webui.core.jobs.scaling import QueueClosed, WorkerScaling
from webui.core.jobs.store import LEASE_SECONDS, MAX_ATTEMPTS, JobRow, JobStore, this_process_prefix
from webui.core.jobs.worker import Outcome, execute
from webui.core.outputs.options import OutputOptions
from webui.core.types import RequestError

log = logging.getLogger(__name__)

LOST_LEASE_REASON = "its worker stopped answering (lease expired)"
_SNAPSHOT_KIND = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "started",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


class JobQueue(WorkerScaling):
    def __init__(
        self,
        engine: Engine,
        db_path: Path,
        *,
        max_queued: int = 200,
        max_per_user: int = 0,
        preview_every: int | None = 0,
        max_job_work: float = 0.0,
        settings: Callable[[str], Any] | None = None,
        workers: Sequence[Engine] | None = None,
        lease: float = LEASE_SECONDS,
        warm_wait: float = 30.0,
        remote_workers: Sequence[Any] = (),
        on_close: Callable[[], None] | None = None,
        grow: Callable[[int], Sequence[Any]] | None = None,
        shrink: Callable[[Any], None] | None = None,
    ) -> None:
        """`settings(key)` reads the stored settings (SettingsStore.get): each job is saved as they say
        then (format, folders, ...), and previews follow them unless `preview_every` fixes the period
        (None: the settings decide; 0: no previews; N: every N steps).

        `workers`: one engine per worker thread (one per device, each with its own model cache);
        default: `engine` alone. `engine` checks submitted requests and lists samplers. `lease`:
        seconds a claimed job stays this process's without a heartbeat. `warm_wait`: how long a job may
        wait for a worker that already holds its checkpoint before any free worker takes it.
        `remote_workers` (ray_pool.RayWorker): run jobs there instead, one dispatcher thread each; `engine`
        then only checks requests and lists models, and `workers` is not used. `on_close` runs once the
        queue is closed (stops the Ray cluster the workers live on). `grow(n)` starts n more remote
        workers and `shrink(remote)` stops a drained one (ray_pool.RayPool.add/remove): the workers
        can then be scaled while jobs run (add_workers, remove_worker)."""
        self.engine = engine
        if workers is not None and not workers:
            raise ValueError("workers: give at least one engine")
        if len({id(e.manager.load_lock) for e in workers or [engine]}) > 1:
            raise ValueError(
                "workers: their model managers must share one load_lock (two loads at once break each other)"
            )
        if not lease > 0:
            raise ValueError(f"lease: must be more than 0 seconds, got {lease}")
        self.lease = lease
        self.warm_wait = warm_wait
        tag = uuid.uuid4().hex[:6]  # two queues of one process never share a worker id
        self._tag = tag
        self._grow, self._shrink = grow, shrink
        self._workers = [
            WorkerSlot(f"{this_process_prefix()}{tag}-w{n}-{e.manager.precision.device}", e)
            for n, e in enumerate(workers or [engine])
        ]
        if remote_workers:
            self._workers = [
                WorkerSlot(f"{this_process_prefix()}{tag}-ray{n}", engine, remote=r)
                for n, r in enumerate(remote_workers)
            ]
        self._added = len(self._workers)  # numbers worker ids; the list is replaced, never changed in place
        # downloads (BACKGROUND_KINDS) run on a worker of their own, beside the devices' ones: a long
        # transfer never holds up generation, nor generation a download
        self._background = WorkerSlot(f"{this_process_prefix()}{tag}-bg", engine)
        self.settings = settings
        self.max_job_work = max_job_work  # megapixel-steps a job may ask for (budget.py); 0: no limit
        self.db_path = Path(db_path)
        # one folder per job: its input images, and the images its request asked not to save
        self.files_dir = self.db_path.parent / f"{self.db_path.stem}-files"
        self.max_queued = max_queued
        self.max_per_user = max_per_user  # jobs one owner may have waiting; 0: no per-owner limit
        self.preview_every = preview_every
        self._store = JobStore(self.db_path)
        self._events = EventLog()
        self._cond = threading.Condition()  # guards _runs/_closing; idle workers wait on it
        self._runs: dict[str, Running] = {}  # worker id -> the job it runs
        self._closing = False
        self._started = False
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._on_close = on_close
        self._retried: dict[str, str] = {}  # job id -> why it runs again (a remote worker died): a warning

    # --- lifecycle

    @property
    def worker_ids(self) -> tuple[str, ...]:
        return tuple(w.id for w in self._workers)

    @property
    def remote_workers(self) -> dict[str, Any]:
        """{worker id: its remote worker (ray_pool.RayWorker)} for the workers that run jobs remotely."""
        return {w.id: w.remote for w in self._workers if w.remote is not None}

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engine of each device worker (each with its own model manager and cache)."""
        return tuple(w.engine for w in self._workers)

    def start(self) -> None:
        """Recover jobs a killed process left running (a job another live process runs under its lease
        is left alone), then start the worker threads and the heartbeat."""
        if self._started:
            raise RuntimeError("the job queue is already started")
        if self._closing:
            raise QueueClosed("the job queue is closed")
        self._started = True
        for job_id, state in self._store.recover().items():
            log.warning("job %s was running when the last process stopped: now %s", job_id, state.value)
        self._fail_oversized()
        for n, slot in enumerate(self._slots()):
            name = "sfumato-jobs-background" if slot is self._background else f"sfumato-jobs-{n}"
            slot.thread = threading.Thread(target=self._work, args=(slot,), name=name, daemon=True)
            slot.thread.start()
        self._beat = threading.Thread(target=self._heartbeat, name="sfumato-jobs-heartbeat", daemon=True)
        self._beat.start()

    def close(self, timeout: float = 10) -> None:
        """Take no more jobs; let the running ones finish (up to timeout, then interrupt and requeue them)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        threads = [w.thread for w in self._slots() if w.thread is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        if any(t.is_alive() for t in threads):
            with self._cond:
                for run in self._runs.values():
                    run.shutdown = True
                    run.token.interrupt(keep_partial=False)  # it runs again
            deadline = time.monotonic() + timeout
            for thread in threads:
                thread.join(max(deadline - time.monotonic(), 0))
        self._beat_stop.set()
        if self._beat is not None:
            self._beat.join(timeout)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
        if any(t.is_alive() for t in threads):
            log.error("a job worker did not stop within %.0f s; leaving the store open", 2 * timeout)
            return
        self._store.close()

    # --- submitting and reading

    def submit(self, request: JobRequest, owner: str) -> JobInfo:
        self.engine.check(request)  # refused now, not when its turn comes
        check_work(request, self.max_job_work)
        kind = kind_of(request)
        if not isinstance(owner, str):
            raise RequestError("owner", "must be text")
        job_id = uuid.uuid4().hex
        with self._cond:
            self._check_room(owner)  # refuse early, before writing any input image
        folder = self.files_dir / job_id
        # the input images are written (and fsynced) outside the lock: other calls go on meanwhile
        data = request_to_json(request, image_dir=folder)
        try:
            with self._cond:
                self._check_room(owner)
                self._store.insert(job_id, owner, kind, data, time.time())
                self._cond.notify_all()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        info = self.get(job_id)
        self._events.append(job_id, "queued", info)
        self._announce_positions(skip=job_id)
        return info

    def _fail_oversized(self) -> None:
        """Waiting jobs over the work budget (queued under a larger one, or re-queued by a restart) fail
        instead of running: lowering --max-job-work and restarting stops a runaway job for good."""
        if self.max_job_work <= 0:
            return
        for job_id in self._store.queue_order():
            row = self._store.get(job_id)
            work = stored_work(row.request) if row is not None else 0.0
            if work > self.max_job_work:
                self._store.fail_queued(job_id, over_budget_message(work, self.max_job_work))
                log.warning("job %s: %.1f megapixel-steps is over --max-job-work: failed", job_id, work)

    def _check_room(self, owner: str) -> None:
        """QueueClosed or QueueFull unless a job of `owner` may be added now; the caller holds the lock."""
        if self._closing:
            raise QueueClosed("the job queue is closed; it takes no more jobs")
        waiting = self._store.count(JobState.QUEUED)
        if waiting >= self.max_queued:
            raise QueueFull(
                f"the queue is full: {waiting} jobs are waiting (limit {self.max_queued}); try again later"
            )
        mine = self._store.count(JobState.QUEUED, owner) if self.max_per_user else 0
        if self.max_per_user and mine >= self.max_per_user:
            raise QueueFull(
                f"you have {mine} jobs waiting (limit {self.max_per_user} per user, --max-queued-per-user); "
                "wait for some to finish or cancel some"
            )

    def get(self, job_id: str) -> JobInfo:
        row = self._store.get(job_id)
        if row is None:
            raise JobNotFound(job_id)
        order = self._store.queue_order() if row.state is JobState.QUEUED else []
        return self._info(row, order)

    def list(self, owner: str | None = None, limit: int = 100) -> list[JobInfo]:
        """Newest first; owner None: everyone's."""
        rows = self._store.recent(owner, limit)
        order = self._store.queue_order() if any(r.state is JobState.QUEUED for r in rows) else []
        return [self._info(r, order) for r in rows]

    def file_owner(self, path: Path) -> str | None:
        """Who owns a result or input file: the owner of the job whose folder (under files_dir) holds it,
        or of the job that recorded it as an image or grid; None when no job does."""
        files = self.files_dir.resolve()
        if path.is_relative_to(files) and path != files:
            row = self._store.get(path.relative_to(files).parts[0])
            return None if row is None else row.owner
        return self._store.owner_of_file(str(path))

    def finished_images(self, since: float = 0.0) -> builtins.list[tuple[float, str, str]]:
        """(finished time, owner, path) of the images of jobs finished after `since` (see JobStore)."""
        return self._store.finished_images(since)

    def running(self) -> JobInfo | None:
        """The job of this process's workers that started first (None: all idle)."""
        jobs = self.running_jobs()
        return jobs[0] if jobs else None

    def running_jobs(self) -> builtins.list[JobInfo]:
        """The jobs this process's workers run now, in the order they started."""
        with self._cond:
            runs = list(self._runs.values())
        return sorted((r.info() for r in runs), key=lambda i: (i.started or 0.0, i.id))

    def queued_count(self) -> int:
        return self._store.count(JobState.QUEUED)

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until the job is done, failed or cancelled; on timeout return its current state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seq = self._events.last_seq(job_id)
            info = self.get(job_id)
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if info.state.finished or left <= 0:
                return info
            self._events.wait_after(job_id, seq, min(left, 1.0))  # re-read now and then: other writers

    def events(self, job_id: str, after_seq: int = 0, timeout: float = 15.0) -> builtins.list[JobEvent]:
        """Events with seq > after_seq, waiting up to timeout for the first. Returns at once, possibly
        empty, for a finished job with nothing newer. A job unknown to this process's memory (earlier
        process, or dropped long after it finished) starts from one snapshot event of its state."""
        info = self.get(job_id)
        self._events.ensure(job_id, info, _SNAPSHOT_KIND[info.state])
        return self._events.since(job_id, after_seq, timeout)

    def event_position(self, job_id: str) -> tuple[int, bool]:
        """(newest event number, final event seen) from memory: cheap enough to poll from an event loop
        (an async caller waits with this and reads the store only when it changes)."""
        return self._events.position(job_id)

    def latest_preview(self, job_id: str) -> bytes | None:
        return self._events.latest_preview(job_id)

    # --- control

    def cancel(self, job_id: str, by: str, admin: bool = False) -> JobInfo:
        """Queued: cancelled at once. Running: interrupted; it ends "cancelled" with its finished images."""
        check_access(self.get(job_id), by, admin)
        with self._cond:
            cancelled = self._store.cancel_queued(job_id)
            if not cancelled and self._store.request_cancel(job_id):  # seen by whoever runs it
                run = self._run_of(job_id)
                if run is not None:  # this process runs it: stop at the next step, no store read
                    run.token.apply(cancel=True, skips=0)
        info = self.get(job_id)
        if cancelled:
            self._events.append(job_id, "cancelled", info)
            self._announce_positions()
        return info

    def delete(self, job_id: str, by: str, admin: bool = False) -> int:
        """Delete a finished job of `by` (any job for an admin): its image and grid files (only those
        inside the outputs or job folders), then its record. Returns how many files were removed.
        Raises NotFinished for a job that is queued or running (cancel it first)."""
        info = self.get(job_id)
        check_access(info, by, admin)
        if not info.state.finished:
            raise NotFinished(f"job {job_id} is {info.state.value}: cancel it first")
        files = [*info.images]
        if info.grid_path:
            files.append(JobImage(info.grid_path, -1, -1, ""))
        removed = self._remove_files(files)
        self._store.delete_finished(job_id)
        return removed

    def skip(self, job_id: str, by: str, admin: bool = False) -> JobInfo:
        """Skip the current batch of a running job (the next batch runs). No effect on other states."""
        check_access(self.get(job_id), by, admin)
        with self._cond:
            skips = self._store.request_skip(job_id)  # seen by whoever runs it
            run = self._run_of(job_id) if skips else None
            if run is not None:
                run.token.apply(cancel=False, skips=skips)
        return self.get(job_id)

    # --- internals

    def _slots(self) -> builtins.list[WorkerSlot]:
        return [*self._workers, self._background]

    def _pick(self, slot: WorkerSlot) -> Callable[[builtins.list[JobRow]], str | None]:
        """For claim_next: the background worker takes only BACKGROUND_KINDS, a device worker the others
        (the model-aware pick among them)."""
        background = slot is self._background
        idle = [w for w in self._workers if w.id not in self._runs and not w.draining]
        warm = None if background else warm_pick(slot, idle, self.warm_wait)

        fits = None if background or slot.remote is None else self._remote_fit(slot, idle)

        def pick(rows: builtins.list[JobRow]) -> str | None:
            mine = [r for r in rows if (r.kind in BACKGROUND_KINDS) == background]
            if fits is not None:
                mine = [r for r in mine if fits(r)]
            if not mine:
                return None
            return mine[0].id if warm is None else warm(mine)

        return pick

    def _remote_fit(self, slot: WorkerSlot, idle: builtins.list[WorkerSlot]) -> Callable[[JobRow], bool]:
        """Which waiting jobs remote worker `slot` may take: one whose checkpoint it has (or that no
        worker has: it fails at once, naming the model), and not the job whose run just died on it while
        another worker is idle."""
        others = [w for w in self._workers if w is not slot and w.remote is not None and not w.draining]
        ready = [w for w in idle if w is not slot and w.remote is not None and not w.remote.broken]

        def fits(row: JobRow) -> bool:
            if row.id == slot.avoid and ready:
                return False
            want = row.request.get("checkpoint") or None
            return bool(slot.remote.has_checkpoint(want)) or not any(
                w.remote.has_checkpoint(want) for w in others
            )

        return fits

    def _run_of(self, job_id: str) -> Running | None:
        """The run of `job_id` in this process (the caller holds the lock), else None."""
        return next((r for r in self._runs.values() if r.base.id == job_id), None)

    def _info(self, row: JobRow, order: builtins.list[str]) -> JobInfo:
        with self._cond:
            current = self._run_of(row.id)
        if current is not None and row.state is JobState.RUNNING and current.base.worker == row.worker:
            return current.info()
        result = row.result
        queued = row.state is JobState.QUEUED and row.id in order
        return JobInfo(
            id=row.id,
            owner=row.owner,
            kind=row.kind,
            state=row.state,
            request=row.request,
            created=row.created,
            started=row.started,
            finished=row.finished,
            progress=JobProgressInfo.from_json(row.progress),
            queue_position=order.index(row.id) + 1 if queued else None,
            images=tuple(JobImage.from_json(i) for i in result.get("images", [])),
            grid_path=result.get("grid_path"),
            model_title=result.get("model_title"),
            interrupted=bool(result.get("interrupted", False)),
            error=row.error,
            error_field=result.get("error_field"),
            attempts=row.attempts,
            worker=row.worker,
            output=result.get("output"),
        )

    def _announce_positions(self, skip: str | None = None) -> None:
        """A "queued" event for each waiting job whose place in line changed."""
        order = self._store.queue_order()
        for position, job_id in enumerate(order, start=1):
            if job_id == skip:
                continue
            last = self._events.last_info(job_id)
            if last is not None and last.queue_position == position:
                continue
            row = self._store.get(job_id)
            if row is not None and row.state is JobState.QUEUED:
                self._events.append(job_id, "queued", self._info(row, order))

    def _work(self, slot: WorkerSlot) -> None:
        try:
            self._work_loop(slot)
        finally:
            if slot.draining:
                self._retire(slot)

    def _work_loop(self, slot: WorkerSlot) -> None:
        while True:
            try:
                if slot.remote is not None and not slot.remote.wait_ready():
                    log.error("job worker %s: its Ray actor is gone; it takes no more jobs", slot.id)
                    return
                run = self._claim(slot)
                if run is None:
                    return
                self._run(run, slot)
            except Exception:  # the store failed (disk full, ...): report, pause, go on
                log.exception("job worker %s error", slot.id)
                with self._cond:
                    self._runs.pop(slot.id, None)
                    self._cond.wait(1.0)

    def _claim(self, slot: WorkerSlot) -> Running | None:
        with self._cond:
            while True:
                if self._closing or slot.draining:
                    return None
                row = self._store.claim_next(slot.id, self.lease, prefer=self._pick(slot))
                if row is not None:
                    info = self._info(row, [])
                    token = StoreCancelToken(store=self._store, job_id=row.id)
                    run = Running(info, token=token, earlier=info.images)
                    self._runs[slot.id] = run
                    self._cond.notify_all()  # the others look again: what they waited for may be theirs now
                    return run
                # woken by submit/close/a claim; the timeout sees jobs other processes add
                self._cond.wait(1.0)

    def _run(self, run: Running, slot: WorkerSlot) -> None:
        job_id = run.base.id
        self._events.append(job_id, "started", run.info())
        self._announce_positions()
        folder = self.files_dir / job_id
        try:
            request = request_from_json(run.base.kind, run.base.request, image_dir=folder)
            slot.last_checkpoint = getattr(request, "checkpoint", None) or slot.last_checkpoint
            if slot.remote is not None:
                remote = self._run_remote(run, slot, request)
                if remote is None:  # its worker died: back in the queue for another one
                    return
                outcome = remote
            else:
                outcome = execute(
                    slot.engine,
                    request,
                    run.token,
                    results_dir=folder,
                    report=JobReporter(self._store, self._events, self._remove_files, run),
                    preview_every=self._preview_every(),
                    outputs=self._outputs(),
                )
        except RequestError as e:  # a stored request this version cannot read
            outcome = Outcome((), error=str(e), error_field=e.field)
        if outcome.output is not None and outcome.error is None and slot is self._background:
            for worker in self._workers:  # a downloaded model is listed by every worker at once
                if worker.remote is not None:
                    worker.remote.refresh()
                elif worker.engine is not slot.engine:
                    worker.engine.manager.refresh()
                    worker.engine.loras.refresh()
        self._finish(run, outcome, slot)

    def _run_remote(self, run: Running, slot: WorkerSlot, request: Any) -> Outcome | None:
        """Run on `slot`'s remote worker; None when it died and the job went back to the queue."""
        job_id = run.base.id
        want = getattr(request, "checkpoint", None)
        if not slot.remote.has_checkpoint(want):
            what = f"the checkpoint {want!r}" if want else "a checkpoint"
            return Outcome(
                (),
                error=f"no Ray worker has {what}: each worker loads models from its own node's model "
                "folders (put the file there, at the same path as on the server)",
                error_field="checkpoint",
            )
        try:
            return cast(
                Outcome,
                slot.remote.run(
                    job_id,
                    request,
                    run.token,
                    results_dir=self.files_dir / job_id,
                    report=JobReporter(self._store, self._events, self._remove_files, run),
                    preview_every=self._preview_every(),
                    outputs=self._outputs(),
                ),
            )
        except WorkerFault as e:
            reason = str(e)
        with self._cond:
            shutdown, lost, cancelled = run.shutdown, run.lost, run.token.cancel_seen
        if lost:
            return Outcome((), interrupted=True)  # _finish records nothing: the job is another's now
        if shutdown and self._store.requeue(job_id, worker=slot.id):
            log.warning("job %s: %s during shutdown; it runs again at the next start", job_id, reason)
        elif cancelled or run.base.attempts >= MAX_ATTEMPTS:
            return Outcome(
                run.images,
                error=f"{reason}; not run again (attempt {run.base.attempts})",
                interrupted=cancelled,
            )
        elif self._store.retry(job_id, worker=slot.id):
            slot.avoid = job_id
            with self._cond:
                self._retried[job_id] = f"retried on another worker: {reason}"
            log.warning("job %s: %s; retried on another worker", job_id, reason)
        with self._cond:
            run.finished = True
            self._runs.pop(slot.id, None)
            self._cond.notify_all()
        self._events.append(job_id, "queued", self.get(job_id))
        self._announce_positions()
        return None

    def _heartbeat(self) -> None:
        """Renew this process's leases; take back the jobs of workers whose lease ran out."""
        every = min(self.lease / 6, 5.0)
        while not self._beat_stop.wait(every):
            try:
                with self._cond:
                    runs = list(self._runs.values())
                for run in runs:
                    if not self._store.renew(run.base.id, run.worker, self.lease):
                        with self._cond:
                            if run.finished:
                                continue
                            run.lost = True  # another worker has it now: stop, keep nothing
                        log.error(
                            "job %s: worker %s lost its lease; stopping its run", run.base.id, run.worker
                        )
                        run.token.interrupt(keep_partial=False)
                back = self._store.recover(reason=LOST_LEASE_REASON)
                for job_id, state in back.items():
                    log.warning("job %s: its worker stopped answering; now %s", job_id, state.value)
                    self._events.append(job_id, _SNAPSHOT_KIND[state], self.get(job_id))
                if back:
                    self._announce_positions()
                    with self._cond:
                        self._cond.notify_all()
            except Exception:  # the store failed: try again at the next beat
                log.exception("job heartbeat error")

    def _preview_every(self) -> int:
        if self.preview_every is not None:
            return self.preview_every
        if self.settings is None or not self.settings("live_previews_enable"):
            return 0
        every = int(self.settings("show_progress_every_n_steps") or 0)
        return every if every > 0 else 0  # -1 (A1111: only when a batch ends): the finished images show then

    def _outputs(self) -> OutputOptions:
        if self.settings is None:
            return OutputOptions(self.engine.config.outputs_dir)
        return OutputOptions.from_settings(self.settings, self.engine.config.outputs_dir)

    def _finish(self, run: Running, outcome: Outcome, slot: WorkerSlot) -> None:
        job_id, worker = run.base.id, slot.id
        with self._cond:
            run.finished = True
            shutdown, lost = run.shutdown, run.lost
            cancelled = run.cancel_requested or run.token.cancel_seen
        if lost:  # its lease ran out and the job went back to the queue (or to another worker)
            with self._cond:
                self._runs.pop(worker, None)
            self._events.append(job_id, "queued", self.get(job_id))
            return
        if shutdown and outcome.error is None and outcome.interrupted:
            self._store.requeue(job_id, worker=worker)
            with self._cond:
                self._runs.pop(worker, None)
            self._events.append(job_id, "queued", self.get(job_id))
            return
        if outcome.error is not None:
            state = JobState.FAILED
        elif cancelled:
            state = JobState.CANCELLED
        else:
            state = JobState.DONE
        progress = run.progress
        images = outcome.images
        with self._cond:
            retried = self._retried.pop(job_id, None)
        if retried is not None:  # the user sees why it took two runs
            images = tuple(dataclasses.replace(i, warnings=(*i.warnings, retried)) for i in images)
        if state is JobState.DONE:
            progress = dataclasses.replace(progress, fraction=1.0, eta=0.0)
            self._remove_files(run.earlier)  # superseded by this complete run
        else:
            images = (*images, *run.earlier)  # not re-made: kept, and listed
        run.earlier = ()
        result = {
            "images": [i.to_json() for i in images],
            "grid_path": outcome.grid_path,
            "model_title": outcome.model_title,
            "interrupted": outcome.interrupted,
            **({"error_field": outcome.error_field} if outcome.error_field else {}),
            **({"output": outcome.output} if outcome.output is not None else {}),
        }
        kept = self._store.finish(
            job_id, state, result=result, error=outcome.error, progress=progress.to_json(), worker=worker
        )
        with self._cond:
            self._runs.pop(worker, None)
            self._cond.notify_all()
        if not kept:
            log.error("job %s: worker %s no longer held it; its outcome was not recorded", job_id, worker)
        self._events.append(
            job_id, state.value if kept else _SNAPSHOT_KIND[self.get(job_id).state], self.get(job_id)
        )

    def _remove_files(self, images: Sequence[JobImage]) -> int:
        """Delete the files of images (only inside the outputs or the job files); how many went."""
        roots = [self.engine.config.outputs_dir.resolve(), self.files_dir.resolve()]
        removed = 0
        for image in images:
            path = Path(image.path).resolve()
            if any(path.is_relative_to(root) for root in roots):
                try:
                    if path.is_file():
                        path.unlink()
                        removed += 1
                except OSError as e:
                    log.warning("cannot remove the image %s: %s", path, e)
        return removed
