"""Many waiting A1111 clients do not stall the server: waits hold no threads, store calls have their own,
and one user's blocking requests are capped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import Running, make_manager, running_server

FAST = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}
LONG = {"prompt": "long", "steps": 500, "width": 64, "height": 64, "n_iter": 200, "seed": 1}
BLOCKING = 44  # more than anyio's 40 default threads
STREAMS = 8


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _cancel_everything(srv: Running) -> None:
    queue = srv.services.queue
    for info in queue.list(limit=1000):
        if not info.state.finished:
            queue.cancel(info.id, by="test", admin=True)


@pytest.fixture()
def srv(tiny_data_dir: Path, tmp_path: Path) -> Iterator[Running]:
    manager = make_manager(tiny_data_dir, tmp_path)
    # no per-user queue quota here: one user fills the queue on purpose (tests/test_server_quota.py)
    with running_server(
        tiny_data_dir, tmp_path, manager=manager, max_waits_per_user=200, max_queued_per_user=0
    ) as running:
        try:
            yield running
        finally:
            _cancel_everything(running)


def _stream(srv: Running, job_id: str, stop: threading.Event) -> int:
    """Follow a job's SSE stream until it ends or `stop` is set; the number of events read."""
    seen = 0
    with srv.client(timeout=300) as c, c.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
        for line in r.iter_lines():
            seen += line.startswith("event:")
            if stop.is_set():
                break
    return seen


def test_listing_answers_while_many_clients_wait(srv: Running) -> None:
    queue = srv.services.queue
    with srv.client() as c:
        long_id = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG}).json()["id"]
    _until(lambda: (r := queue.running()) is not None and r.id == long_id, 60, "the long job to start")

    stop = threading.Event()
    with ThreadPoolExecutor(BLOCKING + STREAMS) as pool:
        waiting: list[Future[httpx.Response]] = []
        streams: list[Future[int]] = []
        with srv.client() as c:
            for _ in range(STREAMS):  # streams of queued jobs: they long-poll for the whole test
                job = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST}).json()["id"]
                streams.append(pool.submit(_stream, srv, job, stop))

        def blocking() -> httpx.Response:
            with srv.client(timeout=600) as c:
                return c.post("/sdapi/v1/txt2img", json=FAST)

        waiting = [pool.submit(blocking) for _ in range(BLOCKING)]
        # Before the fix the waits and streams took all 40 threads: the rest never got to submit.
        _until(lambda: queue.queued_count() >= STREAMS + BLOCKING, 60, "every blocking request's job")
        time.sleep(0.5)
        try:
            with srv.client(timeout=60) as c:
                listing = c.get("/api/v1/jobs", params={"limit": 200})
                submitted = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST})
            assert listing.status_code == 200 and submitted.status_code == 201
            running = queue.running()
            assert running is not None and running.id == long_id  # answered while the long job ran
            assert not any(f.done() for f in waiting)  # and while every client still waited
            assert queue.queued_count() >= BLOCKING + STREAMS + 1  # every blocking client got its job in
            jobs = listing.json()["jobs"]
            assert {j["id"] for j in jobs} >= {long_id} and len(jobs) >= 40
        finally:
            stop.set()
            _cancel_everything(srv)
        for f in waiting:
            assert f.result(timeout=120).status_code == 200  # cancelled jobs answer too, none lost
        for s in streams:
            assert s.result(timeout=120) >= 1


def test_one_users_blocking_requests_are_capped(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--api", "--api-auth", "ann:pw,ben:pw"]
    with running_server(tiny_data_dir, tmp_path, flags=flags, max_waits_per_user=2) as srv:
        queue = srv.services.queue
        try:
            with srv.client(auth=("ann", "pw")) as c:
                long_id = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG}).json()["id"]
            _until(lambda: (r := queue.running()) is not None and r.id == long_id, 60, "the long job")

            def blocking(user: str) -> httpx.Response:
                with srv.client(auth=(user, "pw"), timeout=600) as c:
                    return c.post("/sdapi/v1/txt2img", json=FAST)

            with ThreadPoolExecutor(4) as pool:
                first = [pool.submit(blocking, "ann") for _ in range(2)]
                _until(lambda: queue.queued_count() >= 2, 60, "ann's two jobs")
                with srv.client(auth=("ann", "pw")) as c:
                    third = c.post("/sdapi/v1/txt2img", json=FAST)
                assert third.status_code == 429 and "limit 2" in third.json()["detail"]
                assert third.headers["retry-after"]
                other = pool.submit(blocking, "ben")  # another user is not affected
                _until(lambda: queue.queued_count() >= 3, 60, "ben's job")
                assert not other.done()
                _cancel_everything(srv)
                assert all(f.result(timeout=120).status_code == 200 for f in [*first, other])
            with srv.client(auth=("ann", "pw")) as c:  # the slots were given back
                assert c.post("/sdapi/v1/txt2img", json=FAST).status_code == 200
        finally:
            _cancel_everything(srv)


def test_api_submission_does_not_wait_for_busy_gradio_handlers(tiny_data_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    release = threading.Event()
    busy = threading.Semaphore(0)

    def slow(text: str) -> str:  # a sync Gradio handler: it runs on anyio's default thread pool
        busy.release()
        release.wait(120)
        return text

    with gr.Blocks(analytics_enabled=False) as ui:
        box = gr.Textbox()
        out = gr.Textbox()
        box.submit(slow, box, out, concurrency_limit=None)
    with running_server(tiny_data_dir, tmp_path, ui=ui) as srv, srv.client(timeout=60) as c:
        try:
            for n in range(40):  # a 41st join would wait: Gradio itself needs a thread for it
                body = {"fn_index": 0, "data": [str(n)], "session_hash": f"s{n}", "event_data": None}
                assert c.post("/gradio_api/queue/join", json=body).status_code == 200
            for _ in range(40):  # every default thread is taken by a handler
                assert busy.acquire(timeout=60)
            submitted = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST})
            listing = c.get("/api/v1/jobs")
            assert submitted.status_code == 201 and listing.status_code == 200
            assert not release.is_set()  # answered while the handlers still held their threads
        finally:
            release.set()
