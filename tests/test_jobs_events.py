"""Per-job event lists: numbered, long-polled, bounded in memory."""

from __future__ import annotations

import threading
import time

from webui.core.jobs.events import EventLog
from webui.core.jobs.info import JobInfo, JobProgressInfo, JobState


def _info(job_id: str, state: JobState = JobState.RUNNING, step: int = 0) -> JobInfo:
    return JobInfo(
        id=job_id,
        owner="o",
        kind="txt2img",
        state=state,
        request={},
        created=0.0,
        started=None,
        finished=None,
        progress=JobProgressInfo(step=step, steps=10),
        queue_position=None,
        images=(),
        grid_path=None,
        model_title=None,
        interrupted=False,
        error=None,
        attempts=0,
    )


def test_events_are_numbered_per_job_and_read_after_a_seq() -> None:
    log = EventLog()
    log.append("a", "queued", _info("a"))
    log.append("b", "queued", _info("b"))
    log.append("a", "started", _info("a"))
    assert [(e.seq, e.kind) for e in log.since("a", 0, 0)] == [(1, "queued"), (2, "started")]
    assert [e.seq for e in log.since("a", 1, 0)] == [2]
    assert [e.seq for e in log.since("b", 0, 0)] == [1]
    assert log.last_seq("a") == 2 and log.last_seq("zzz") == 0


def test_long_poll_waits_for_the_next_event_and_times_out() -> None:
    log = EventLog()
    log.append("a", "started", _info("a"))
    t0 = time.monotonic()
    assert log.since("a", 1, 0.3) == []
    assert 0.25 <= time.monotonic() - t0 < 2
    timer = threading.Timer(0.2, lambda: log.append("a", "progress", _info("a", step=1)))
    timer.start()
    t0 = time.monotonic()
    got = log.since("a", 1, 10)
    assert [e.kind for e in got] == ["progress"] and time.monotonic() - t0 < 5
    timer.join()


def test_finished_job_answers_at_once() -> None:
    log = EventLog()
    log.append("a", "done", _info("a", JobState.DONE))
    t0 = time.monotonic()
    assert log.since("a", 1, 10) == []
    assert time.monotonic() - t0 < 1


def test_memory_is_bounded() -> None:
    log = EventLog(keep_per_job=5, keep_finished=3)
    for i in range(50):
        log.append("a", "progress", _info("a", step=i), preview_png=b"png%d" % i)
    events = log.since("a", 0, 0)
    assert [e.seq for e in events] == [46, 47, 48, 49, 50]  # only the newest, numbering continues
    assert [e.preview_png for e in events] == [None, None, None, None, b"png49"]  # one preview kept
    assert log.latest_preview("a") == b"png49"
    for i in range(10):
        log.append(f"f{i}", "done", _info(f"f{i}", JobState.DONE))
    assert log.job_count() == 1 + 3  # the running job and the three newest finished ones
    assert log.last_seq("f0") == 0 and log.last_seq("f9") == 1


def test_finished_jobs_are_dropped_after_their_time() -> None:
    log = EventLog(finished_ttl=0.0)
    log.append("old", "done", _info("old", JobState.DONE))
    time.sleep(0.01)
    log.append("new", "failed", _info("new", JobState.FAILED))
    assert log.last_seq("old") == 0


def test_snapshot_only_for_jobs_without_events() -> None:
    log = EventLog()
    log.ensure("a", _info("a", JobState.DONE), "done")
    log.ensure("a", _info("a", JobState.DONE), "done")
    assert [e.kind for e in log.since("a", 0, 0)] == ["done"]
    assert log.last_info("a") is not None and log.last_info("a").state is JobState.DONE  # type: ignore[union-attr]
