"""Several job workers on one store: two queues on one file (as two processes), leases that spare a live
worker and take back a dead one's job, cancel and skip from the other process, two CPU workers in one
queue (fair order kept, both serving), the model-aware pick, and the worker/device choice from flags."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from webui.core.config import AppConfig
from webui.core.devices import worker_precisions
from webui.core.engine import Engine
from webui.core.jobs import JobQueue, JobState
from webui.core.jobs.fairness import fair_order
from webui.core.jobs.running import WorkerSlot, warm_pick
from webui.core.jobs.store import JobStore
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import Txt2ImgRequest
from webui.flags import FlagError, parse_flags

FAST: dict[str, Any] = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler_name="Euler")
ELSEWHERE = "other-machine:4242:w0"


def _req(**kw: Any) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red apple", "seed": 1, **FAST, **kw})


def _manager(data_dir: Path, out: Path, lock: threading.Lock) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(data_dir, outputs_dir=out), Precision(), load_lock=lock)
    m.refresh()
    return m


@pytest.fixture(scope="module")
def managers(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[ModelManager]:
    """Two managers: two workers, each with its own model cache (loading one file at a time)."""
    out, lock = tmp_path_factory.mktemp("outputs"), threading.Lock()
    return [_manager(tiny_data_dir, out, lock), _manager(tiny_data_dir, out, lock)]


@pytest.fixture
def engines(managers: list[ModelManager], tmp_path: Path) -> list[Engine]:
    config = AppConfig.for_data_dir(managers[0].config.data_dir, outputs_dir=tmp_path / "outputs")
    return [Engine(config, m) for m in managers]


@pytest.fixture
def closing() -> Iterator[list[JobQueue]]:
    queues: list[JobQueue] = []
    yield queues
    for q in queues:
        q.close(timeout=30)


def _wait_for(predicate: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _reached(q: JobQueue, job_id: str, batch: int = 1, step: int = 1) -> bool:
    info = q.get(job_id)
    return info.state is JobState.RUNNING and (info.progress.batch, info.progress.step) >= (batch, step)


def test_a_second_process_leaves_a_live_job_alone_and_its_cancel_reaches_it(
    engines: list[Engine], tmp_path: Path, closing: list[JobQueue]
) -> None:
    db = tmp_path / "jobs.sqlite"
    first = JobQueue(engines[0], db)
    closing.append(first)
    first.start()
    job = first.submit(_req(seed=10, steps=60, n_iter=30), "a")
    _wait_for(lambda: _reached(first, job.id, batch=2))  # batch 1 is saved
    second = JobQueue(engines[1], db)  # another process opens the same file and starts
    closing.append(second)
    second.start()
    seen = second.get(job.id)
    assert seen.state is JobState.RUNNING and seen.attempts == 1  # not re-queued: its lease is live
    assert seen.worker in first.worker_ids and seen.worker not in second.worker_ids
    cancelled = second.cancel(job.id, "a")  # through the store: the first process stops it
    assert cancelled.state is JobState.RUNNING  # it stops at its next step, in the other process
    end = first.wait(job.id, timeout=60)
    assert end.state is JobState.CANCELLED and end.interrupted and end.error is None
    assert 1 <= len(end.images) < 30 and all(Path(i.path).is_file() for i in end.images)  # kept
    assert end.attempts == 1 and second.get(job.id).state is JobState.CANCELLED


def test_a_skip_from_another_process_drops_the_current_batch_only(
    engines: list[Engine], tmp_path: Path, closing: list[JobQueue]
) -> None:
    db = tmp_path / "jobs.sqlite"
    runner, other = JobQueue(engines[0], db), JobQueue(engines[1], db)  # `other` is never started
    closing.extend([runner, other])
    runner.start()
    job = runner.submit(_req(seed=20, steps=200, n_iter=2), "a")
    _wait_for(lambda: _reached(runner, job.id))
    other.skip(job.id, "a")
    end = runner.wait(job.id, timeout=120)
    assert end.state is JobState.DONE and not end.interrupted
    assert [i.seed for i in end.images] == [21]  # batch 1 (seed 20) skipped, batch 2 made


def test_an_expired_lease_runs_the_job_once_more_here(
    engines: list[Engine], tmp_path: Path, closing: list[JobQueue]
) -> None:
    db = tmp_path / "jobs.sqlite"
    q = JobQueue(engines[0], db, lease=1.0)
    closing.append(q)
    job = q.submit(_req(seed=5), "a")
    store = JobStore(db)  # a worker on another machine claims it, then stops answering
    claimed = store.claim_next(ELSEWHERE, lease=4.0)  # long enough to still be live at start on a busy CI
    store.close()
    assert claimed is not None and claimed.id == job.id
    q.start()
    assert q.get(job.id).state is JobState.RUNNING  # its lease is still live at start: left alone
    end = q.wait(job.id, timeout=120)
    assert end.state is JobState.DONE and end.attempts == 2 and end.worker in q.worker_ids
    # the "done" event may be written just after the state the wait returned on
    _wait_for(lambda: q.events(job.id, 0, timeout=0)[-1].kind == "done")
    events = q.events(job.id, 0, timeout=0)
    assert [e.kind for e in events].count("started") == 1 and events[-1].kind == "done"
    # the job was seen going back to the queue after the other worker's attempt
    assert any(e.kind == "queued" and e.info.attempts == 1 for e in events)


def test_the_heartbeat_keeps_a_job_longer_than_its_lease(
    engines: list[Engine], tmp_path: Path, closing: list[JobQueue]
) -> None:
    db = tmp_path / "jobs.sqlite"
    runner = JobQueue(engines[0], db, lease=1.0)  # renewed every 1/6 s
    closing.append(runner)
    runner.start()
    job = runner.submit(_req(seed=3, steps=400, n_iter=50), "a")
    _wait_for(lambda: _reached(runner, job.id))
    watcher = JobQueue(engines[1], db, lease=1.0)  # its heartbeat takes back expired jobs
    closing.append(watcher)
    watcher.start()
    until = time.monotonic() + 4.0  # four leases long
    while time.monotonic() < until:
        seen = watcher.get(job.id)
        assert seen.state is JobState.RUNNING and seen.attempts == 1 and seen.worker in runner.worker_ids
        time.sleep(0.1)
    runner.cancel(job.id, "a")
    end = runner.wait(job.id, timeout=60)
    assert end.state is JobState.CANCELLED and end.attempts == 1


def test_two_cpu_workers_serve_three_users_fairly(
    engines: list[Engine], tmp_path: Path, closing: list[JobQueue]
) -> None:
    q = JobQueue(engines[0], tmp_path / "jobs.sqlite", workers=engines)
    closing.append(q)
    assert len(q.worker_ids) == 2 and len(set(q.worker_ids)) == 2
    owners = ["ann", "ann", "ann", "ann", "ben", "ben", "cy", "cy"]
    jobs = [q.submit(_req(seed=100 + n, steps=3), owner) for n, owner in enumerate(owners)]
    expected = fair_order([(j.id, j.owner) for j in jobs], {})
    q.start()
    done = [q.wait(j.id, timeout=300) for j in jobs]
    assert all(d.state is JobState.DONE for d in done), [(d.state, d.error) for d in done]
    started = sorted(done, key=lambda d: d.started or 0.0)
    assert [d.id for d in started] == expected  # claimed in fair order, whichever worker was free
    assert {d.worker for d in done} == set(q.worker_ids)  # both workers served jobs
    assert all(d.attempts == 1 and [i.seed for i in d.images] == [d.request["seed"]] for d in done)


def test_workers_must_share_one_load_lock(tiny_data_dir: Path, tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path / "outputs")
    apart = [Engine(config, ModelManager(config, Precision())) for _ in range(2)]
    with pytest.raises(ValueError, match="workers: their model managers must share one load_lock"):
        JobQueue(apart[0], tmp_path / "jobs.sqlite", workers=apart)


def test_the_warm_worker_gets_its_model_within_a_bound(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for n, (owner, ckpt) in enumerate([("a", "x.safetensors"), ("b", "y.safetensors")]):
        store.insert(f"j{n}", owner, "txt2img", {"prompt": "p", "checkpoint": ckpt}, 100.0 + n)
    cold = WorkerSlot("h:1:w0", engine=None, last_checkpoint="y.safetensors")  # type: ignore[arg-type]
    warm = WorkerSlot("h:1:w1", engine=None, last_checkpoint="x.safetensors")  # type: ignore[arg-type]
    both = [cold, warm]
    # j0 (x) is first in fair order, but w1 holds x: w0 takes j1 (y, its own model) instead
    row = store.claim_next(cold.id, prefer=warm_pick(cold, both, warm_wait=30, now=105.0))
    assert row is not None and row.id == "j1"
    # with only x left, w0 leaves it to w1 while the wait is short...
    assert store.claim_next(cold.id, prefer=warm_pick(cold, both, warm_wait=30, now=106.0)) is None
    # ...and takes it once it has waited warm_wait: nobody starves
    row = store.claim_next(cold.id, prefer=warm_pick(cold, both, warm_wait=30, now=131.0))
    assert row is not None and row.id == "j0"
    assert warm_pick(cold, [cold], warm_wait=30) is None  # one worker: plain fair order
    store.close()


def test_worker_devices_from_the_flags(tmp_path: Path) -> None:
    cpu = AppConfig.for_data_dir(tmp_path)
    assert [p.device for p in worker_precisions(cpu, None, 2, cuda_count=0)] == ["cpu", "cpu"]
    assert [p.device for p in worker_precisions(cpu, None, 1, cuda_count=2)] == ["cuda:0", "cuda:1"]
    assert [p.device for p in worker_precisions(cpu, (1,), 1, cuda_count=2)] == ["cuda:1"]
    assert [p.device for p in worker_precisions(cpu, None, 1, cuda_count=1)] == ["cuda"]
    with pytest.raises(ValueError, match="--device-ids: no CUDA device 3; this machine has 2"):
        worker_precisions(cpu, (0, 3), 1, cuda_count=2)
    with pytest.raises(ValueError, match="--device-ids: this machine has no CUDA device"):
        worker_precisions(cpu, (0,), 1, cuda_count=0)
    with pytest.raises(ValueError, match="--workers: counts CPU workers"):
        worker_precisions(cpu, None, 2, cuda_count=2)
    assert parse_flags(["--device-ids", "0,1"]).device_ids == (0, 1)
    assert parse_flags([]).device_ids is None and parse_flags([]).workers == 1
    for bad, flag in ((["--device-ids", "0,x"], "--device-ids"), (["--workers", "0"], "--workers")):
        with pytest.raises(FlagError, match=flag):
            parse_flags(bad)
    if not torch.cuda.is_available():
        only = worker_precisions(cpu, None, 3)  # this machine, as it is
        assert [p.device for p in only] == ["cpu"] * 3
