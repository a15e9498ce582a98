"""One job cannot hold the worker for weeks: a per-job work budget (--max-job-work), and admins
(--admin) who can cancel anyone's job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_server_harness import Running, make_manager, running_server
from webui.api.auth import AuthSpecError
from webui.core.jobs.budget import check_work, job_work
from webui.core.types import RequestError, Txt2ImgRequest
from webui.flags import FlagError, parse_flags
from webui.server import build_options

USERS = "alice:pa,bob:pb,root:pr"
HUGE = {"prompt": "x", "steps": 500, "width": 512, "height": 512, "n_iter": 1000}
LONG = {"prompt": "long", "steps": 500, "width": 64, "height": 64, "n_iter": 200, "seed": 1}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("admin")
    flags = ["--api", "--api-auth", USERS, "--admin", "root"]
    with running_server(tiny_data_dir, tmp, flags=flags, manager=make_manager(tiny_data_dir, tmp)) as r:
        yield r


def test_a_job_over_the_default_budget_is_refused_naming_the_field(srv: Running) -> None:
    with srv.client(auth=("alice", "pa")) as c:
        for body in (HUGE, {**HUGE, "n_iter": 1, "batch_size": 64}):
            r = c.post("/sdapi/v1/txt2img", json=body)
            assert r.status_code == 422, r.text
            field = "n_iter" if body["n_iter"] > 1 else "batch_size"
            assert r.json()["field"] == field and "--max-job-work" in r.json()["error"]
        r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": HUGE})
        assert r.status_code == 422 and r.json()["field"] == "n_iter"
        hires = {"prompt": "x", "steps": 150, "width": 1024, "height": 1024, "batch_size": 8,
                 "enable_hr": True, "hr_scale": 4, "hr_upscaler": "Latent"}  # fmt: skip
        r = c.post("/sdapi/v1/txt2img", json=hires)
        assert r.status_code == 422 and r.json()["field"] == "batch_size"
    assert srv.services.queue.list(limit=100) == []  # nothing was queued


def test_the_budget_flag(tiny_data_dir: Path, tmp_path: Path) -> None:
    assert build_options(parse_flags([])).max_job_work == 4096
    assert build_options(parse_flags(["--max-job-work", "0"])).max_job_work == 0
    with pytest.raises(FlagError, match="--max-job-work"):
        parse_flags(["--max-job-work", "-1"])
    small = {"prompt": "x", "steps": 20, "width": 64, "height": 64, "batch_size": 2}  # 0.16 MP-steps
    with (
        running_server(tiny_data_dir, tmp_path, flags=["--api", "--max-job-work", "0.1"]) as s,
        s.client() as c,
    ):
        r = c.post("/sdapi/v1/txt2img", json=small)
        assert r.status_code == 422 and r.json()["field"] == "batch_size" and "at most 0.1 a job" in r.text
        assert c.post("/sdapi/v1/txt2img", json={**small, "batch_size": 1}).status_code == 200


def test_job_work_counts_every_image_and_the_hires_pass() -> None:
    base = Txt2ImgRequest(prompt="x", steps=10, width=512, height=512, batch_size=2, n_iter=3)
    assert job_work(base) == pytest.approx(0.262144 * 10 * 6)
    hires = Txt2ImgRequest(prompt="x", steps=10, width=512, height=512, enable_hr=True, hr_scale=2.0,
                           hr_second_pass_steps=5, hr_upscaler="Latent")  # fmt: skip
    assert job_work(hires) == pytest.approx(0.262144 * 10 + 1.048576 * 5)
    check_work(base, 0)  # 0: no limit
    with pytest.raises(RequestError) as e:
        check_work(base, 15)
    assert e.value.field == "n_iter"


def _until_running(srv: Running, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while (r := srv.services.queue.running()) is None or r.id != job_id:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)


def test_an_admin_cancels_anyones_job_others_cannot(srv: Running) -> None:
    with srv.client(auth=("alice", "pa")) as alice:
        job = alice.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG}).json()["id"]
    try:
        _until_running(srv, job)
        with srv.client(auth=("bob", "pb")) as bob:
            assert bob.post(f"/api/v1/jobs/{job}/cancel").status_code == 404
            assert bob.post("/sdapi/v1/interrupt").status_code == 200
            assert job not in {j["id"] for j in bob.get("/api/v1/jobs").json()["jobs"]}
        time.sleep(0.5)
        assert srv.services.queue.get(job).state.value == "running"  # bob changed nothing
        with srv.client(auth=("root", "pr")) as root:
            assert job in {j["id"] for j in root.get("/api/v1/jobs").json()["jobs"]}
            assert root.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
            events = root.get(f"/api/v1/jobs/{job}/events", timeout=60)
            assert "event: cancelled" in events.text
    finally:
        srv.services.queue.cancel(job, by="test", admin=True)


def test_admin_flag_names_configured_users() -> None:
    assert build_options(parse_flags(["--api-auth", USERS, "--admin", "root, bob"])).admins == {"root", "bob"}
    assert build_options(parse_flags(["--api-auth", USERS])).admins == frozenset()
    with pytest.raises(AuthSpecError, match="--admin: eve is not a configured user"):
        build_options(parse_flags(["--api-auth", USERS, "--admin", "root,eve"]))
    with pytest.raises(AuthSpecError, match="--admin: needs users"):
        build_options(parse_flags(["--admin", "root"]))


def test_a_restart_does_not_run_an_oversized_job_again(tiny_data_dir: Path, tmp_path: Path) -> None:
    from tests.test_server_harness import server_config
    from webui.core.engine import Engine
    from webui.core.jobs import JobQueue
    from webui.core.jobs.store import JobStore

    db = tmp_path / "jobs" / "jobs.sqlite"
    earlier = JobQueue(Engine(server_config(tiny_data_dir, tmp_path)), db)  # no budget back then
    huge = earlier.submit(Txt2ImgRequest(**HUGE), "alice").id
    waiting = earlier.submit(Txt2ImgRequest(**{**HUGE, "n_iter": 2, "prompt": "queued"}), "bob").id
    small = earlier.submit(Txt2ImgRequest(prompt="s", steps=2, width=64, height=64), "alice").id
    earlier.close()
    store = JobStore(db)
    claimed = store.claim_next()  # the process was killed while it ran the huge job
    assert claimed is not None and claimed.id == huge
    store.close()
    with running_server(tiny_data_dir, tmp_path, flags=["--api", "--max-job-work", "100"]) as srv:
        queue = srv.services.queue
        for job_id in (huge, waiting):
            info = queue.get(job_id)
            assert info.state.value == "failed" and "--max-job-work" in (info.error or ""), info
        assert queue.wait(small, 120).state.value == "done"
