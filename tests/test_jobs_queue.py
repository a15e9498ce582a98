"""The job queue end to end on a tiny real model: submit, fair order, cancel, skip, failures, events."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.jobs import (
    JobEvent,
    JobNotFound,
    JobQueue,
    JobState,
    NotAllowed,
    QueueClosed,
    QueueFull,
    request_from_json,
)
from webui.core.jobs.codec import request_to_json
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.types import RequestError, Txt2ImgRequest

FAST = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler_name="Euler")


def _req(**kw: Any) -> Txt2ImgRequest:
    args: dict[str, Any] = dict(prompt="a red apple", seed=1, **FAST)
    args.update(kw)
    return Txt2ImgRequest(**args)


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    out = tmp_path_factory.mktemp("outputs")
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs"), manager)


@pytest.fixture
def queue(engine: Engine, tmp_path: Path) -> Iterator[JobQueue]:
    q = JobQueue(engine, tmp_path / "jobs.sqlite", preview_every=1)
    yield q
    q.close(timeout=30)


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _wait_until_step(q: JobQueue, job_id: str, batch: int = 1, step: int = 1) -> None:
    def reached() -> bool:
        p = q.get(job_id).progress
        return q.get(job_id).state is JobState.RUNNING and (p.batch, p.step) >= (batch, step)

    _wait_for(reached)


def test_submit_get_list_wait(queue: JobQueue) -> None:
    job = queue.submit(_req(seed=42, batch_size=2), owner="alice")
    assert job.state is JobState.QUEUED and job.owner == "alice" and job.kind == "txt2img"
    assert job.queue_position == 1 and job.images == () and job.attempts == 0
    assert request_from_json(job.kind, job.request) == _req(seed=42, batch_size=2)
    assert queue.queued_count() == 1 and queue.running() is None
    queue.start()
    done = queue.wait(job.id, timeout=120)
    assert done.state is JobState.DONE and done.error is None and done.attempts == 1
    assert done.started is not None and done.finished is not None and done.created <= done.started
    assert done.progress.fraction == 1.0 and done.queue_position is None
    assert [i.seed for i in done.images] == [42, 43]
    for img in done.images:
        with Image.open(img.path) as im:
            assert im.info["parameters"] == img.infotext
        assert parse_infotext(img.infotext)["Seed"] == str(img.seed)
    assert done.grid_path is not None and Path(done.grid_path).is_file()
    assert done.model_title is not None and done.model_title.startswith("tiny-sd1")
    assert queue.get(job.id) == done
    other = queue.submit(_req(), owner="bob")
    assert [j.id for j in queue.list()] == [other.id, job.id]
    assert [j.id for j in queue.list("alice")] == [job.id]
    assert queue.list("carol") == []
    queue.wait(other.id, timeout=120)
    with pytest.raises(JobNotFound):
        queue.get("no-such-job")


def test_unsaved_images_are_kept_in_the_job_folder(queue: JobQueue, engine: Engine) -> None:
    queue.start()
    job = queue.wait(queue.submit(_req(save_images=False), "a").id, timeout=120)
    assert job.state is JobState.DONE and len(job.images) == 1
    path = Path(job.images[0].path)
    assert path.is_file() and path.parent == queue.files_dir / job.id
    assert not (engine.config.outputs_dir / "txt2img-images").exists()


def test_bad_requests_are_refused_at_submit(queue: JobQueue) -> None:
    with pytest.raises(RequestError) as e:
        queue.submit(_req(steps=0), "a")
    assert e.value.field == "steps"
    assert queue.queued_count() == 0


def test_fair_order_between_three_owners(queue: JobQueue) -> None:
    jobs = [queue.submit(_req(seed=i), owner) for i, owner in enumerate("AAAAABBBCC")]
    expected = "ABCABCABAA"
    by_position = sorted(jobs, key=lambda j: queue.get(j.id).queue_position or 0)
    assert "".join(j.owner for j in by_position) == expected
    assert sorted(queue.get(j.id).queue_position or 0 for j in jobs) == list(range(1, 11))
    queue.start()
    finished = [queue.wait(j.id, timeout=300) for j in jobs]
    assert all(j.state is JobState.DONE for j in finished)
    ran = sorted(finished, key=lambda j: j.started or 0)
    assert "".join(j.owner for j in ran) == expected
    assert [j.id for j in ran] == [j.id for j in by_position]


def test_a_new_owner_goes_before_waiting_jobs_of_an_owner_who_ran(queue: JobQueue) -> None:
    queue.start()
    first = queue.submit(_req(steps=400, n_iter=5), "A")  # keeps the worker busy until cancelled
    _wait_until_step(queue, first.id)
    a2 = queue.submit(_req(), "A")
    a3 = queue.submit(_req(), "A")
    b1 = queue.submit(_req(), "B")
    assert [queue.get(j.id).queue_position for j in (b1, a2, a3)] == [1, 2, 3]
    events = queue.events(a2.id, after_seq=1, timeout=0)  # a2 was told it moved back
    assert [e.info.queue_position for e in events if e.kind == "queued"] == [2]
    queue.cancel(first.id, "A")
    for j in (a2, a3, b1):
        queue.wait(j.id, timeout=120)
    assert [j.id for j in sorted(map(queue.get, (a2.id, a3.id, b1.id)), key=lambda j: j.started or 0)] == [
        b1.id,
        a2.id,
        a3.id,
    ]


def test_queue_full_has_a_clear_message(engine: Engine, tmp_path: Path) -> None:
    q = JobQueue(engine, tmp_path / "jobs.sqlite", max_queued=2)
    a = q.submit(_req(), "a")
    q.submit(_req(), "b")
    with pytest.raises(QueueFull, match="limit 2"):
        q.submit(_req(), "c")
    q.cancel(a.id, "a")
    q.submit(_req(), "c")  # room again
    q.close()
    with pytest.raises(QueueClosed):
        q.submit(_req(), "d")


def test_only_owner_or_admin_may_cancel_or_skip(queue: JobQueue) -> None:
    job = queue.submit(_req(), "alice")
    with pytest.raises(NotAllowed):
        queue.cancel(job.id, by="mallory")
    with pytest.raises(NotAllowed):
        queue.skip(job.id, by="mallory")
    assert queue.get(job.id).state is JobState.QUEUED
    assert queue.cancel(job.id, by="root", admin=True).state is JobState.CANCELLED
    own = queue.submit(_req(), "alice")
    assert queue.cancel(own.id, by="alice").state is JobState.CANCELLED
    with pytest.raises(JobNotFound):
        queue.cancel("nope", by="alice")


def test_cancel_queued_job_never_runs(queue: JobQueue) -> None:
    a = queue.submit(_req(), "a")
    b = queue.submit(_req(), "b")
    cancelled = queue.cancel(a.id, "a")
    assert cancelled.state is JobState.CANCELLED and cancelled.finished is not None
    assert queue.get(b.id).queue_position == 1
    queue.start()
    assert queue.wait(b.id, timeout=120).state is JobState.DONE
    after = queue.get(a.id)
    assert after.state is JobState.CANCELLED and after.started is None and after.attempts == 0
    assert [e.kind for e in queue.events(a.id, 0, timeout=0)] == ["queued", "cancelled"]


def test_cancel_running_job_keeps_finished_images(queue: JobQueue) -> None:
    queue.start()
    job = queue.submit(_req(seed=10, steps=60, n_iter=20), "a")
    _wait_until_step(queue, job.id, batch=2)  # batch 1 is saved
    t0 = time.monotonic()
    queue.cancel(job.id, "a")
    end = queue.wait(job.id, timeout=60)
    assert time.monotonic() - t0 < 10
    assert end.state is JobState.CANCELLED and end.interrupted and end.error is None
    assert 1 <= len(end.images) < 20
    assert [i.seed for i in end.images] == list(range(10, 10 + len(end.images)))
    assert all(Path(i.path).is_file() for i in end.images)
    follow = queue.submit(_req(), "a")  # the worker goes on
    assert queue.wait(follow.id, timeout=120).state is JobState.DONE


def test_skip_drops_the_current_batch_only(queue: JobQueue) -> None:
    queue.start()
    job = queue.submit(_req(seed=20, steps=200, n_iter=2), "a")
    _wait_until_step(queue, job.id, batch=1, step=1)
    queue.skip(job.id, "a")
    end = queue.wait(job.id, timeout=120)
    assert end.state is JobState.DONE and not end.interrupted
    assert [i.seed for i in end.images] == [21]  # batch 1 (seed 20) skipped, batch 2 made


def test_a_failing_job_does_not_stop_the_next(queue: JobQueue) -> None:
    with pytest.raises(RequestError) as refused:  # refused at submit: nothing is queued
        queue.submit(_req(checkpoint="no-such-model"), "a")
    assert refused.value.field == "checkpoint" and queue.list() == []
    # a job queued before its model went away (or by an earlier run) fails when its turn comes
    stored = request_to_json(_req(checkpoint="no-such-model"))
    queue._store.insert("bad-job", "a", "txt2img", stored, time.time())
    bad = queue.get("bad-job")
    good = queue.submit(_req(), "a")
    queue.start()
    failed = queue.wait(bad.id, timeout=120)
    assert failed.state is JobState.FAILED
    assert failed.error is not None and "checkpoint" in failed.error and "no-such-model" in failed.error
    assert queue.wait(good.id, timeout=120).state is JobState.DONE
    assert queue.events(bad.id, 0, timeout=0)[-1].kind == "failed"


class _OomOnce(Engine):
    """The real engine, except that the first run runs out of memory (as a GPU would)."""

    def __init__(self, base: Engine) -> None:
        super().__init__(base.config, base.manager)
        self.tripped = False

    def run(self, request: Any, **kw: Any) -> Any:  # type: ignore[override]
        if not self.tripped:
            self.tripped = True
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().run(request, **kw)


def test_out_of_memory_fails_that_job_and_the_next_runs(engine: Engine, tmp_path: Path) -> None:
    q = JobQueue(_OomOnce(engine), tmp_path / "jobs.sqlite")
    first = q.submit(_req(), "a")
    second = q.submit(_req(), "b")
    q.start()
    failed = q.wait(first.id, timeout=120)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error.startswith("out of memory") and "20.00 GiB" in failed.error
    assert q.wait(second.id, timeout=120).state is JobState.DONE
    q.close()


def test_events_long_poll_with_progress_and_previews(queue: JobQueue) -> None:
    job = queue.submit(_req(steps=3, n_iter=2), "a")
    first = queue.events(job.id, 0, timeout=5)
    assert [(e.seq, e.kind) for e in first] == [(1, "queued")]
    assert first[0].info.queue_position == 1
    t0 = time.monotonic()
    assert queue.events(job.id, 1, timeout=0.3) == []  # nothing happens until the worker starts
    assert time.monotonic() - t0 >= 0.25
    threading.Timer(0.2, queue.start).start()
    seen: list[JobEvent] = []
    last = 1
    deadline = time.monotonic() + 120
    while not (seen and seen[-1].kind == "done"):
        assert time.monotonic() < deadline
        batch = queue.events(job.id, last, timeout=10)
        seen += batch
        last = batch[-1].seq if batch else last
    assert [e.seq for e in seen] == list(range(2, 2 + len(seen)))
    kinds = [e.kind for e in seen]
    assert kinds[0] == "started" and kinds[-1] == "done" and "image" in kinds
    progress = [e.info.progress for e in seen if e.kind == "progress"]
    assert [(p.batch, p.step) for p in progress] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert all(p.steps == 3 and p.batches == 2 for p in progress)
    live = [e.preview_png for e in seen if e.kind == "progress"]
    assert all(p is not None and p.startswith(b"\x89PNG") for p in live)  # preview_every=1
    stored = [e.preview_png for e in queue.events(job.id, 0, timeout=0) if e.preview_png is not None]
    assert stored == [live[-1]]  # in memory, only the newest preview is kept
    png = queue.latest_preview(job.id)
    assert png is not None and png == live[-1]
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (8, 8)  # latents are 1/8 of 64x64
    assert seen[-1].info.state is JobState.DONE and len(seen[-1].info.images) == 2
    assert queue.events(job.id, last, timeout=10) == []  # finished: answers at once


def test_events_of_a_job_from_an_earlier_process(engine: Engine, tmp_path: Path) -> None:
    q1 = JobQueue(engine, tmp_path / "jobs.sqlite")
    q1.start()
    job = q1.wait(q1.submit(_req(), "a").id, timeout=120)
    q1.close()
    q2 = JobQueue(engine, tmp_path / "jobs.sqlite")
    events = q2.events(job.id, 0, timeout=0)
    assert [(e.seq, e.kind) for e in events] == [(1, "done")]
    assert events[0].info == job
    q2.close()


def test_close_requeues_a_running_job_for_the_next_start(engine: Engine, tmp_path: Path) -> None:
    q1 = JobQueue(engine, tmp_path / "jobs.sqlite")
    q1.start()
    job = q1.submit(_req(steps=400, n_iter=50), "a")
    _wait_until_step(q1, job.id)
    q1.close(timeout=0.2)
    again = JobQueue(engine, tmp_path / "jobs.sqlite")
    info = again.get(job.id)
    assert info.state is JobState.QUEUED and info.attempts == 0 and info.images == ()
    again.cancel(job.id, "a")
    again.close()
