"""Leases in the job store: claims by worker id, heartbeats, recovery that spares live workers, the
schema-1 file opened in place, cancel and skip written on the job for whichever process runs it."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from webui.core.jobs.info import JobState
from webui.core.jobs.store import SCHEMA_VERSION, JobStore, holder_alive, this_process_prefix

# the schema every job store had before leases (schema 1), as a file made by that version holds it
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    kind TEXT NOT NULL, state TEXT NOT NULL, request TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, run_seq INTEGER, progress TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}', error TEXT, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_owner ON jobs (owner, seq);
CREATE INDEX jobs_owner_run ON jobs (owner, run_seq);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO jobs (id, owner, kind, state, request, created, started, run_seq, attempts)
    VALUES ('old-running', 'a', 'txt2img', 'running', '{"prompt": "x"}', 1.0, 2.0, 1, 1);
INSERT INTO jobs (id, owner, kind, state, request, created) VALUES ('old-queued', 'b', 'txt2img', 'queued',
    '{"prompt": "y"}', 3.0);
"""

ELSEWHERE = "other-machine:4242:w0"  # a worker of another machine: only its lease tells


def _add(store: JobStore, job_id: str, owner: str = "a", t: float = 1.0) -> None:
    store.insert(job_id, owner, "txt2img", {"prompt": job_id}, t)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.sqlite")
    yield s  # type: ignore[misc]
    s.close()


def test_a_schema_1_file_is_migrated_in_place_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.close()
    store = JobStore(path)
    assert SCHEMA_VERSION == 2 and store.schema_version() == 2
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")}
    assert {"worker", "lease_until", "cancel_requested", "skip_requests"} <= columns
    old = store.get("old-running")
    assert old is not None and old.state is JobState.RUNNING and old.worker is None and old.attempts == 1
    # a job the old version left running has no lease: the next start takes it back, as before
    assert store.recover() == {"old-running": JobState.QUEUED}
    assert store.queue_order() == ["old-queued", "old-running"]  # b never ran: b first
    row = store.claim_next("me:1:w0", now=10.0)
    assert row is not None and row.id == "old-queued" and row.worker == "me:1:w0"
    assert row.lease_until is not None and row.lease_until > 10.0
    store.close()
    again = JobStore(path)  # opening the migrated file again changes nothing
    assert again.schema_version() == 2 and again.get("old-queued").worker == "me:1:w0"  # type: ignore[union-attr]
    again.close()


def test_a_live_lease_of_another_worker_is_left_alone_and_an_expired_one_runs_once_more(
    store: JobStore,
) -> None:
    _add(store, "j")
    row = store.claim_next(ELSEWHERE, lease=30, now=100.0)
    assert row is not None and row.lease_until == 130.0
    assert store.recover(now=120.0) == {}  # its worker is alive as far as anyone can tell
    assert store.get("j").state is JobState.RUNNING  # type: ignore[union-attr]
    assert store.renew("j", ELSEWHERE, lease=30, now=125.0)  # heartbeat: good until 155
    assert store.recover(now=150.0) == {}
    assert not store.renew("j", "someone-else:1:w0", now=150.0)  # only the holder renews
    assert store.recover(now=160.0) == {"j": JobState.QUEUED}  # expired: back in line, attempt 1 used
    assert not store.renew("j", ELSEWHERE, now=161.0)  # the late worker learns it lost the job
    again = store.claim_next("me:1:w0", lease=30, now=170.0)
    assert again is not None and again.attempts == 2 and again.worker == "me:1:w0"
    # the worker that lost it cannot finish it over the new holder
    assert not store.finish("j", JobState.DONE, worker=ELSEWHERE)
    assert store.recover(now=250.0, reason="its worker stopped") == {"j": JobState.FAILED}
    failed = store.get("j")
    assert failed is not None and failed.error == "its worker stopped (attempt 2)"


def test_a_dead_process_of_this_machine_loses_its_jobs_at_once(store: JobStore, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{socket.gethostname()}:{child.pid}:w0"
    live = f"{this_process_prefix()}w0"
    assert not holder_alive(dead) and holder_alive(live) and holder_alive(ELSEWHERE)
    _add(store, "dead", "a")
    _add(store, "mine", "b")
    store.claim_next(dead, lease=3600)
    store.claim_next(live, lease=3600)
    assert store.recover() == {"dead": JobState.QUEUED}  # the lease is long, but its process is gone
    assert store.get("mine").state is JobState.RUNNING  # type: ignore[union-attr]


def test_two_stores_on_one_file_never_run_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    setup = JobStore(path)
    for i in range(60):
        _add(setup, f"j{i}", f"o{i % 3}")
    stores = [JobStore(path), JobStore(path)]  # two connections, as two processes have
    claims: list[tuple[str, str | None, str]] = []
    lock = threading.Lock()
    go = threading.Barrier(4)

    def claimer(s: JobStore, worker: str) -> None:
        go.wait()
        while (row := s.claim_next(worker)) is not None:
            with lock:
                claims.append((row.id, row.worker, worker))
            assert s.finish(row.id, JobState.DONE, worker=worker)

    threads = [threading.Thread(target=claimer, args=(stores[n % 2], f"host:{n}:w{n}")) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = Counter(job_id for job_id, _, _ in claims)
    assert sorted(ids) == sorted(f"j{i}" for i in range(60)) and set(ids.values()) == {1}
    assert all(recorded == worker for _, recorded, worker in claims)
    assert all(setup.get(f"j{i}").state is JobState.DONE for i in range(60))  # type: ignore[union-attr]
    for s in (setup, *stores):
        s.close()


def test_cancel_and_skip_are_written_for_whichever_process_runs_the_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    runner, other = JobStore(path), JobStore(path)
    _add(runner, "j")
    assert not other.request_cancel("j") and not other.request_skip("j")  # queued: nothing to stop
    runner.claim_next("host:1:w0")
    assert runner.control("j") == (False, 0)
    assert other.request_skip("j") == 1 and other.request_skip("j") == 2
    assert other.request_cancel("j")
    assert runner.control("j") == (True, 2)
    runner.requeue("j", worker="host:1:w0")
    runner.claim_next("host:1:w0")  # a new attempt starts with no stale request
    assert runner.control("j") == (False, 0)
    assert runner.control("nope") == (False, 0)
    runner.close()
    other.close()


def test_this_process_prefix_names_host_and_pid() -> None:
    assert this_process_prefix() == f"{socket.gethostname()}:{os.getpid()}:"
