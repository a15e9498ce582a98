"""A server started with --workers 2: jobs of three users over /api/v1 run on both CPU workers, and each
job's JSON names the worker that ran it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_api_jobs import AUTH, FAST, USERS, _as, _submit, _wait_done
from tests.test_server_harness import make_manager, running_server


def test_two_cpu_workers_over_the_api(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("workers-api")
    flags = [*AUTH, "--workers", "2"]
    with running_server(
        tiny_data_dir, tmp, flags=flags, manager=make_manager(tiny_data_dir, tmp), auth_delay=0.01
    ) as srv:
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
        workers = {r["worker"] for r in results.values()}
        assert workers == set(queue.worker_ids)  # both served, and the JSON says which
        with _as(srv, "ann") as c:
            listed = c.get("/api/v1/jobs").json()
        rows = listed["jobs"] if isinstance(listed, dict) else listed
        assert all(r["worker"] in queue.worker_ids for r in rows if r["owner"] == "ann")
