"""A server started with --workers 2: jobs of three users over /api/v1 run on both CPU workers, each job's
JSON names the worker that ran it, and /sdapi/v1/interrupt stops the caller's own job of the two."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_api_jobs import AUTH, FAST, USERS, _as, _submit, _wait_done
from tests.test_server_harness import Running, make_manager, running_server


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("workers-api")
    flags = [*AUTH, "--workers", "2"]
    with running_server(
        tiny_data_dir, tmp, flags=flags, manager=make_manager(tiny_data_dir, tmp), auth_delay=0.01
    ) as running:
        yield running


def test_two_cpu_workers_over_the_api(srv: Running) -> None:
    queue = srv.services.queue
    assert len(queue.worker_ids) == 2
    ids: dict[str, list[str]] = {u: [] for u in USERS}
    for n in range(8):
        user = list(USERS)[n % 3]
        with _as(srv, user) as c:
            ids[user].append(_submit(c, {**FAST, "seed": 50 + n, "steps": 3}))
    results: dict[str, dict[str, Any]] = {}

    def wait(user: str) -> None:
        with _as(srv, user) as c:
            for job_id in ids[user]:
                results[job_id] = _wait_done(c, job_id)

    threads = [threading.Thread(target=wait, args=(u,)) for u in USERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 8 and all(r["state"] == "done" for r in results.values()), results
    assert {r["worker"] for r in results.values()} == set(queue.worker_ids)  # both served, JSON says which
    with _as(srv, "ann") as c:
        rows = c.get("/api/v1/jobs").json()["jobs"]
    assert rows and all(r["worker"] in queue.worker_ids for r in rows)


def _state(c: Any, job_id: str) -> str:
    return str(c.get(f"/api/v1/jobs/{job_id}").json()["state"])


def test_sdapi_interrupt_stops_the_callers_job_of_the_two_running(srv: Running) -> None:
    slow = {**FAST, "steps": 200, "n_iter": 20}
    with _as(srv, "ann") as ann, _as(srv, "ben") as ben:
        first = _submit(ann, {**slow, "seed": 1})
        deadline = time.monotonic() + 120
        while _state(ann, first) != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _submit(ben, {**slow, "seed": 2})
        while _state(ben, second) != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ben.post("/sdapi/v1/interrupt").status_code == 200  # ann's job started first
        assert _wait_done(ben, second)["state"] == "cancelled"
        assert _state(ann, first) == "running"  # not ann's
        assert ann.post("/sdapi/v1/interrupt").status_code == 200
        assert _wait_done(ann, first)["state"] == "cancelled"


def test_the_workers_are_listed_and_only_ray_workers_can_be_added_or_removed(srv: Running) -> None:
    from webui.core.jobs import WorkersFixed

    queue = srv.services.queue
    with _as(srv, "ben") as c:
        listed = c.get("/api/v1/workers").json()["workers"]
        assert [w["id"] for w in listed] == list(queue.worker_ids)
        assert all(w["kind"] == "local" and w["device"] == "cpu" and w["job"] is None for w in listed)
        refused = c.post("/api/v1/workers", json={"count": 1})  # a user, not an admin
        assert refused.status_code == 403 and "only an admin" in refused.json()["detail"]
        assert c.delete(f"/api/v1/workers/{listed[0]['id']}").status_code == 403
    with pytest.raises(WorkersFixed, match="--ray"):
        queue.add_workers(1)
    with pytest.raises(WorkersFixed, match="only Ray workers"):
        queue.remove_worker(listed[0]["id"])
    with pytest.raises(KeyError):
        queue.remove_worker("nobody")
