"""The whole server behind --api-auth: every route needs a login; cross-site writes and big bodies refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import Running, make_manager, running_server

FAST = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("secure")
    flags = ["--api", "--api-auth", "alice:correct-horse", "--gradio-auth", "bob:battery:staple"]
    with running_server(
        tiny_data_dir,
        tmp,
        flags=flags,
        manager=make_manager(tiny_data_dir, tmp),
        auth_delay=0,  # no throttling here: every wrong login must meet a 401 (tests/test_server_throttle.py)
        max_body_bytes=200_000,
    ) as running:
        yield running


def _every_route(srv: Running, job_id: str) -> list[tuple[str, str]]:
    with srv.client(auth=("alice", "correct-horse")) as c:
        spec = c.get("/openapi.json").json()
    routes = [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/redoc"), ("GET", "/")]
    for path, methods in spec["paths"].items():
        concrete = path.replace("{job_id}", job_id).replace("{index}", "0")
        routes += [(m.upper(), concrete) for m in methods]
    return routes


def test_every_route_needs_a_login(srv: Running) -> None:
    with srv.client(auth=("alice", "correct-horse")) as alice:
        r = alice.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST})
        job_id = r.json()["id"]
        alice.get(f"/api/v1/jobs/{job_id}/events").raise_for_status()  # runs to the end of the job
    routes = _every_route(srv, job_id)
    assert len(routes) > 40
    assert ("GET", f"/api/v1/jobs/{job_id}/events") in routes
    assert ("GET", f"/api/v1/jobs/{job_id}/images/0") in routes
    wrong = [None, ("alice", "wrong"), ("alice", ""), ("mallory", "correct-horse"), ("bob", "battery")]
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for method, path in routes:
            for auth in wrong:
                r = c.request(method, path, auth=auth) if auth else c.request(method, path)
                assert r.status_code == 401, (method, path, auth, r.status_code)
                assert r.headers["www-authenticate"].startswith("Basic")
            r = c.request(method, path, headers={"Authorization": "Bearer abc"})
            assert r.status_code == 401
    # and the right users get in (the union of --api-auth and --gradio-auth)
    for user, password in (("alice", "correct-horse"), ("bob", "battery:staple")):
        with srv.client(auth=(user, password)) as c:
            assert c.get("/docs").status_code == 200
            assert c.get("/openapi.json").status_code == 200
            assert c.get("/sdapi/v1/sd-models").status_code == 200
    with srv.client(auth=("alice", "correct-horse")) as c:
        r = c.get(f"/api/v1/jobs/{job_id}/images/0")
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
        events = c.get(f"/api/v1/jobs/{job_id}/events")
        assert events.status_code == 200 and "event: done" in events.text


def test_cmd_flags_do_not_leak_passwords(srv: Running) -> None:
    with srv.client(auth=("alice", "correct-horse")) as c:
        text = c.get("/sdapi/v1/cmd-flags").text
        options = c.get("/sdapi/v1/options").text
    for secret in ("correct-horse", "battery:staple"):
        assert secret not in text and secret not in options


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}],
)
def test_cross_site_posts_refused_even_with_a_login(srv: Running, headers: dict[str, str]) -> None:
    with srv.client(auth=("alice", "correct-horse")) as c:
        for path, body in (
            ("/sdapi/v1/txt2img", FAST),
            ("/sdapi/v1/options", {"CLIP_stop_at_last_layers": 2}),
            ("/api/v1/jobs", {"kind": "txt2img", "request": FAST}),
            ("/sdapi/v1/interrupt", {}),
        ):
            r = c.post(path, json=body, headers=headers)
            assert r.status_code == 403 and "cross-site" in r.json()["detail"], path
        assert c.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
        same = c.post("/sdapi/v1/interrupt", headers={"Origin": srv.url})
        assert same.status_code == 200  # the server's own pages may post


def test_oversized_body_is_413(srv: Running) -> None:
    with srv.client(auth=("alice", "correct-horse")) as c:
        big = base64.b64encode(b"\0" * 300_000).decode()
        r = c.post("/sdapi/v1/png-info", json={"image": big})
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:
            yield b'{"image": "'
            for _ in range(30):
                yield b"A" * 10_000
            yield b'"}'

        r = c.post("/sdapi/v1/png-info", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_a_mounted_gradio_ui_is_behind_the_same_login(tiny_data_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as ui:
        gr.Markdown("studio")
    with running_server(
        tiny_data_dir, tmp_path, flags=["--api-auth", "alice:pw"], ui=ui, auth_delay=0.01
    ) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as anon:
            for path in ("/", "/config", "/gradio_api/info", "/gradio_api/startup-events", "/api/v1/health"):
                assert anon.get(path).status_code == 401, path
            r = anon.post("/gradio_api/queue/join", json={})
            assert r.status_code == 401
        with srv.client(auth=("alice", "pw")) as c:
            assert c.get("/api/v1/health").status_code == 200  # our routes come before the mount
            page = c.get("/")
            assert page.status_code == 200 and "UI is off" not in page.text
            r = c.post("/gradio_api/queue/join", json={}, headers={"Origin": "https://evil.example"})
            assert r.status_code == 403
