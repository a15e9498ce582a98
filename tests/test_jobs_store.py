"""The SQLite job store: WAL, schema version, state changes as single transactions, crash recovery."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from webui.core.jobs.info import JobState
from webui.core.jobs.store import SCHEMA_VERSION, JobStore, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(tmp_path / "jobs.sqlite")
    yield s
    s.close()


def _add(store: JobStore, job_id: str, owner: str = "a", t: float = 1.0) -> None:
    store.insert(job_id, owner, "txt2img", {"prompt": job_id}, t)


def test_new_store_is_wal_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.sqlite"
    JobStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    db.close()
    again = JobStore(path)  # reopening keeps the data and the version
    assert again.schema_version() == SCHEMA_VERSION
    again.close()


def test_newer_schema_and_foreign_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        JobStore(path)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE jobs (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a job store"):
        JobStore(other)


def test_insert_get_list_round_trip(store: JobStore) -> None:
    _add(store, "j1", "alice", 10.0)
    _add(store, "j2", "bob", 11.0)
    _add(store, "j3", "alice", 12.0)
    row = store.get("j1")
    assert row is not None and row.owner == "alice" and row.state is JobState.QUEUED
    assert row.request == {"prompt": "j1"} and row.created == 10.0 and row.attempts == 0
    assert store.get("nope") is None
    assert [r.id for r in store.recent()] == ["j3", "j2", "j1"]
    assert [r.id for r in store.recent("alice")] == ["j3", "j1"]
    assert [r.id for r in store.recent(limit=1)] == ["j3"]
    assert store.count(JobState.QUEUED) == 3


def test_claim_follows_fair_order_and_counts_attempts(store: JobStore) -> None:
    for i, owner in enumerate("AAB"):
        _add(store, f"{owner}{i}", owner)
    assert store.queue_order() == ["A0", "B2", "A1"]
    first = store.claim_next(now=5.0)
    assert first is not None and first.id == "A0" and first.state is JobState.RUNNING
    assert first.attempts == 1 and first.started == 5.0
    assert store.queue_order() == ["B2", "A1"]
    assert store.claim_next().id == "B2"  # type: ignore[union-attr]
    assert store.claim_next().id == "A1"  # type: ignore[union-attr]
    assert store.claim_next() is None


def test_state_changes_only_from_the_expected_state(store: JobStore) -> None:
    _add(store, "j")
    assert not store.finish("j", JobState.DONE)  # not running yet
    assert store.cancel_queued("j")
    assert not store.cancel_queued("j")
    assert store.claim_next() is None  # a cancelled job never runs
    _add(store, "k")
    store.claim_next()
    assert not store.cancel_queued("k")
    store.set_result("k", {"images": [{"path": "p", "seed": 1, "subseed": 2, "infotext": "t"}]})
    assert store.finish("k", JobState.FAILED, error="boom")
    row = store.get("k")
    assert row is not None and row.state is JobState.FAILED and row.error == "boom"
    assert row.result["images"][0]["path"] == "p"  # images recorded before a failure stay listed
    assert not store.finish("k", JobState.DONE)


def test_recovery_requeues_once_then_fails_with_the_reason(store: JobStore) -> None:
    _add(store, "j")
    store.claim_next()
    assert store.recover() == {"j": JobState.QUEUED}
    row = store.get("j")
    assert row is not None and row.state is JobState.QUEUED and row.attempts == 1
    store.claim_next()
    assert store.get("j").attempts == 2  # type: ignore[union-attr]
    assert store.recover() == {"j": JobState.FAILED}
    row = store.get("j")
    assert row is not None and row.state is JobState.FAILED
    assert row.error == "interrupted by a restart (attempt 2)" and row.finished is not None
    assert store.recover() == {}


def test_clean_shutdown_requeue_does_not_count_as_an_attempt(store: JobStore) -> None:
    _add(store, "j")
    store.claim_next()
    assert store.requeue("j")
    row = store.get("j")
    assert row is not None and row.state is JobState.QUEUED and row.attempts == 0 and row.started is None


def test_two_connections_never_claim_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    setup = JobStore(path)
    for i in range(40):
        _add(setup, f"j{i}", f"o{i % 3}")
    stores = [JobStore(path) for _ in range(4)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(s: JobStore) -> None:
        while (row := s.claim_next()) is not None:
            with lock:
                claimed.append(row.id)

    threads = [threading.Thread(target=claimer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(f"j{i}" for i in range(40))
    for s in (setup, *stores):
        s.close()
