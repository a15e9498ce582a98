"""The job store: jobs in SQLite (WAL), one row each, surviving restarts and kill -9.

Every state change is one transaction, so a crash leaves each job in exactly one state. Picking the
next job (`claim_next`) happens inside one write transaction, so several claimers (threads, or a
remote dispatcher reading the same file) never start the same job twice. The schema carries a version
in the `meta` table; a file written by a newer version is refused rather than misread, an older one is
brought up to date in place (columns added).

Leases: a worker claims a job under its worker id with a lease that its heartbeat renews. `recover`
returns a running job to the queue only when its lease ran out (or its holder is a process of this
machine that no longer exists); a job another live process runs is left alone. Cancel and skip are
written on the job (`request_cancel`, `request_skip`), so whichever process runs it sees them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.core.disk import disk_full_message
from webui.core.jobs.fairness import fair_order
from webui.core.jobs.info import JobState

SCHEMA_VERSION = 2
MAX_ATTEMPTS = 2  # a job interrupted by this many restarts fails instead of running again
LEASE_SECONDS = 30.0  # a claimed job's lease; the worker's heartbeat renews it well before it runs out

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON (codec)
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_seq INTEGER,                        -- start order across all jobs (fairness)
    progress TEXT NOT NULL DEFAULT '{}',    -- JSON (JobProgressInfo)
    result TEXT NOT NULL DEFAULT '{}',      -- JSON: images, grid_path, model_title, interrupted
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_owner_run ON jobs (owner, run_seq);
"""
# schema 2: columns added to a schema-1 table (ALTER TABLE), so an older file opens in place
_ADDED_COLUMNS = (
    ("worker", "TEXT"),  # the worker id that runs (or last ran) the job
    ("lease_until", "REAL"),  # its lease runs out then (time.time()); NULL: claimed without a lease
    ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),  # 1: stop it (whichever process runs it)
    ("skip_requests", "INTEGER NOT NULL DEFAULT 0"),  # skips asked for so far in this attempt
)


def this_process_prefix() -> str:
    """The start of every worker id of this process: "host:pid:"."""
    return f"{socket.gethostname()}:{os.getpid()}:"


def holder_alive(worker: str) -> bool:
    """False when `worker` ("host:pid:name") is a process of this machine that no longer exists; True
    otherwise (another machine's worker, or an id of another form: only its lease can tell)."""
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class StoreError(RuntimeError):
    """The job database cannot be used (newer schema, not a job store)."""


@dataclass(frozen=True)
class JobRow:
    seq: int
    id: str
    owner: str
    kind: str
    state: JobState
    request: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    progress: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    attempts: int
    worker: str | None = None
    lease_until: float | None = None


class JobStore:
    """One SQLite connection shared by the threads of one process, guarded by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self._write() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "jobs" in tables and "meta" not in tables:
                raise StoreError(f"{self.path} has a jobs table but no schema version: not a job store")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer Sfumato (job store schema {row[0]}, "
                    f"this version reads {SCHEMA_VERSION})"
                )
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so reads inside it see what it will change)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if disk_full_message(e) is None:
                    raise
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise OSError(errno.ENOSPC, "database or disk is full", str(self.path)) from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # --- reads

    def get(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _row(row)

    def recent(self, owner: str | None = None, limit: int = 100) -> list[JobRow]:
        """Newest first."""
        where, args = ("WHERE owner=?", (owner,)) if owner is not None else ("", ())
        sql = f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, max(int(limit), 0))).fetchall()
        return [_row(r) for r in rows]

    def finished_images(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        """(finished time, owner, image path) of every image (and grid) of the jobs finished after
        `since`, oldest first: the gallery indexes them with their owner."""
        sql = (
            "SELECT jobs.finished, jobs.owner, json_extract(i.value, '$.path') FROM jobs, "
            "json_each(jobs.result, '$.images') AS i WHERE jobs.finished > ?1 "
            "UNION ALL SELECT finished, owner, json_extract(result, '$.grid_path') FROM jobs "
            "WHERE finished > ?1 AND json_extract(result, '$.grid_path') IS NOT NULL ORDER BY 1"
        )
        with self._lock:
            rows = self._db.execute(sql, (since,)).fetchall()
        return [(float(f), str(o), str(p)) for f, o, p in rows if p]

    def owner_of_file(self, path: str) -> str | None:
        """The owner of the job that recorded `path` as one of its images or its grid, else None."""
        sql = (
            "SELECT owner FROM jobs WHERE json_extract(result, '$.grid_path') = ?1 "
            "OR EXISTS (SELECT 1 FROM json_each(jobs.result, '$.images') AS i "
            "WHERE json_extract(i.value, '$.path') = ?1) ORDER BY seq DESC LIMIT 1"
        )
        with self._lock:
            row = self._db.execute(sql, (path,)).fetchone()
        return None if row is None else str(row[0])

    def count(self, state: JobState, owner: str | None = None) -> int:
        """How many jobs are in `state` (of `owner` only, when given)."""
        sql, args = "SELECT COUNT(*) FROM jobs WHERE state=?", [state.value]
        if owner is not None:
            sql, args = sql + " AND owner=?", [state.value, owner]
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return int(row[0])

    def queue_order(self) -> list[str]:
        """Ids of the queued jobs in the order they will run."""
        with self._lock:
            return self._order(self._db)

    def _order(self, db: sqlite3.Connection) -> list[str]:
        queued = db.execute("SELECT id, owner FROM jobs WHERE state='queued' ORDER BY seq").fetchall()
        owners = sorted({owner for _, owner in queued})
        last_run: dict[str, int] = {}
        for owner in owners:
            row = db.execute("SELECT MAX(run_seq) FROM jobs WHERE owner=?", (owner,)).fetchone()
            if row[0] is not None:
                last_run[owner] = int(row[0])
        return fair_order([(job_id, owner) for job_id, owner in queued], last_run)

    # --- writes

    def insert(self, job_id: str, owner: str, kind: str, request: dict[str, Any], created: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, kind, state, request, created) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, owner, kind, json.dumps(request, allow_nan=False), created),
            )

    def claim_next(
        self,
        worker: str | None = None,
        lease: float = LEASE_SECONDS,
        now: float | None = None,
        prefer: Callable[[list[JobRow]], str | None] | None = None,
    ) -> JobRow | None:
        """Start the next job in fair order: queued -> running, attempts + 1, held by `worker` for
        `lease` seconds (no worker: no lease; `recover` then takes it back at the next start). Images an
        earlier attempt recorded stay listed (the queue replaces them as the run makes them again).

        `prefer(waiting rows in fair order)` names the waiting job to take instead of the first
        (model-aware pick), or None: take nothing now (the job is left for another worker)."""
        t = time.time() if now is None else now
        with self._write() as db:
            order = self._order(db)
            if not order:
                return None
            pick = order[0]
            if prefer is not None:
                rows = [self._get(db, job_id) for job_id in order]
                chosen = prefer([r for r in rows if r is not None])
                if chosen not in order:
                    return None
                pick = chosen
            run_seq = int(db.execute("SELECT COALESCE(MAX(run_seq), 0) + 1 FROM jobs").fetchone()[0])
            db.execute(
                "UPDATE jobs SET state='running', started=?, run_seq=?, attempts=attempts+1, "
                "progress='{}', error=NULL, worker=?, lease_until=?, cancel_requested=0, skip_requests=0 "
                "WHERE id=?",
                (t, run_seq, worker, None if worker is None else t + lease, pick),
            )
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (pick,)).fetchone()
        return _row(row)

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> JobRow | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _row(row)

    def renew(self, job_id: str, worker: str, lease: float = LEASE_SECONDS, now: float | None = None) -> bool:
        """Heartbeat: extend `worker`'s lease on its running job. False when the job is no longer running
        under this worker (its lease ran out and another worker took it, or it was finished)."""
        t = time.time() if now is None else now
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_until=? WHERE id=? AND state='running' AND worker=?",
                (t + lease, job_id, worker),
            )
        return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Ask whoever runs the job to stop it (it ends cancelled). False if it is not running."""
        with self._write() as db:
            cur = db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=? AND state='running'", (job_id,))
        return cur.rowcount == 1

    def request_skip(self, job_id: str) -> int:
        """Ask whoever runs the job to skip its current batch: the number of skips asked for in this
        attempt so far, this one included; 0 if the job is not running."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET skip_requests=skip_requests+1 WHERE id=? AND state='running'", (job_id,)
            )
            if cur.rowcount != 1:
                return 0
            return int(db.execute("SELECT skip_requests FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    def control(self, job_id: str) -> tuple[bool, int]:
        """(cancel requested, skips requested so far) for a job; (False, 0) for an unknown one."""
        with self._lock:
            row = self._db.execute(
                "SELECT cancel_requested, skip_requests FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
        return (False, 0) if row is None else (bool(row[0]), int(row[1]))

    def set_progress(self, job_id: str, progress: dict[str, Any], worker: str | None = None) -> None:
        """Record progress on a running job (`worker`: only while that worker holds it)."""
        held, args = _held_by(worker)
        with self._write() as db:
            db.execute(
                f"UPDATE jobs SET progress=? WHERE id=? AND state='running'{held}",
                (json.dumps(progress), job_id, *args),
            )

    def set_result(self, job_id: str, result: dict[str, Any], worker: str | None = None) -> None:
        """Record the images finished so far on a running job (`worker`: only while that worker holds it)."""
        held, args = _held_by(worker)
        with self._write() as db:
            db.execute(
                f"UPDATE jobs SET result=? WHERE id=? AND state='running'{held}",
                (json.dumps(result), job_id, *args),
            )

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
        now: float | None = None,
        worker: str | None = None,
    ) -> bool:
        """running -> done/failed/cancelled. False if the job was not running (under `worker`, when
        given: a worker whose lease ran out and whose job another worker took does not finish it)."""
        assert state.finished
        sets = ["state=?", "finished=?", "error=?", "lease_until=NULL"]
        args: list[Any] = [state.value, now or time.time(), error]
        if result is not None:
            sets.append("result=?")
            args.append(json.dumps(result))
        if progress is not None:
            sets.append("progress=?")
            args.append(json.dumps(progress))
        held, held_args = _held_by(worker)
        with self._write() as db:
            sql = f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND state='running'{held}"
            cur = db.execute(sql, (*args, job_id, *held_args))
        return cur.rowcount == 1

    def delete_finished(self, job_id: str) -> bool:
        """Forget a finished (done, failed, cancelled) job. False if it is not finished or not there."""
        with self._write() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE id=? AND state IN ('done', 'failed', 'cancelled')", (job_id,)
            )
        return cur.rowcount == 1

    def cancel_queued(self, job_id: str, now: float | None = None) -> bool:
        """queued -> cancelled. False if the job was not queued."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state='cancelled', finished=? WHERE id=? AND state='queued'",
                (now or time.time(), job_id),
            )
        return cur.rowcount == 1

    def fail_queued(self, job_id: str, error: str, now: float | None = None) -> bool:
        """queued -> failed with `error` (a job that may no longer run). False if it was not queued."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state='failed', finished=?, error=? WHERE id=? AND state='queued'",
                (now or time.time(), error, job_id),
            )
        return cur.rowcount == 1

    def requeue(self, job_id: str, worker: str | None = None) -> bool:
        """running -> queued, not counted as an attempt (the worker was stopped by a clean shutdown); the
        images it made stay listed until the re-run makes them again."""
        held, args = _held_by(worker)
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state='queued', started=NULL, progress='{}', lease_until=NULL, "
                f"attempts=MAX(attempts-1, 0) WHERE id=? AND state='running'{held}",
                (job_id, *args),
            )
        return cur.rowcount == 1

    def retry(self, job_id: str, worker: str) -> bool:
        """running -> queued, counted as an attempt (its worker died mid-job): it runs again elsewhere;
        the images it made stay listed until the re-run makes them again."""
        held, args = _held_by(worker)
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state='queued', started=NULL, progress='{}', lease_until=NULL "
                f"WHERE id=? AND state='running'{held}",
                (job_id, *args),
            )
        return cur.rowcount == 1

    def recover(
        self,
        max_attempts: int = MAX_ATTEMPTS,
        now: float | None = None,
        *,
        alive: Callable[[str], bool] = holder_alive,
        reason: str = "interrupted by a restart",
    ) -> dict[str, JobState]:
        """Running jobs whose worker is gone go back to the queue, or fail once they used max_attempts
        (error: "<reason> (attempt N)"). A worker is gone when the job has no lease (claimed without
        one, or by a version without leases), its lease ran out, or `alive(worker id)` says so (a
        process of this machine that no longer exists). A job under a live lease is left alone.

        Returns {job_id: new state}. Their recorded images stay listed on failed jobs.
        """
        t = time.time() if now is None else now
        out: dict[str, JobState] = {}
        with self._write() as db:
            rows = db.execute(
                "SELECT id, attempts, worker, lease_until FROM jobs WHERE state='running' ORDER BY seq"
            ).fetchall()
            for job_id, attempts, worker, lease_until in rows:
                if lease_until is not None and lease_until > t and (worker is None or alive(worker)):
                    continue  # another worker runs it
                if attempts >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET state='failed', finished=?, error=?, lease_until=NULL WHERE id=?",
                        (t, f"{reason} (attempt {attempts})", job_id),
                    )
                    out[job_id] = JobState.FAILED
                else:
                    db.execute(
                        "UPDATE jobs SET state='queued', started=NULL, progress='{}', lease_until=NULL "
                        "WHERE id=?",
                        (job_id,),
                    )
                    out[job_id] = JobState.QUEUED
        return out


_COLUMNS = (
    "seq, id, owner, kind, state, request, created, started, finished, progress, result, error, attempts, "
    "worker, lease_until"
)


def _held_by(worker: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and its argument) limiting an update to the rows `worker` holds; none for None."""
    return ("", ()) if worker is None else (" AND worker=?", (worker,))


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(
        seq=r[0],
        id=r[1],
        owner=r[2],
        kind=r[3],
        state=JobState(r[4]),
        request=json.loads(r[5]),
        created=r[6],
        started=r[7],
        finished=r[8],
        progress=json.loads(r[9]),
        result=json.loads(r[10]),
        error=r[11],
        attempts=r[12],
        worker=r[13],
        lease_until=r[14],
    )
