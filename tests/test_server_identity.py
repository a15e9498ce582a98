"""Without a login each browser has its own identity (a signed cookie from its first page): two browsers
neither see nor cancel each other's jobs, the studio (Gradio) sees the same name, and clients without
the cookie stay the one shared local user."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.test_server_harness import Running, running_server
from webui.api.identity import COOKIE, PREFIX

LONG = {"prompt": "long", "steps": 500, "width": 64, "height": 64, "n_iter": 20, "seed": 1}
PAGE = {"Accept": "text/html,application/xhtml+xml"}


def _ours(r: httpx.Response) -> list[str]:
    return [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]


def _browser(srv: Running) -> tuple[httpx.Client, str]:
    with httpx.Client(base_url=srv.url, timeout=60) as first:
        r = first.get("/", headers=PAGE)
    assert r.status_code == 200
    [cookie] = _ours(r)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    return httpx.Client(base_url=srv.url, timeout=60, headers={"Cookie": f"{COOKIE}={value}"}), value


def test_each_browser_has_its_own_jobs_and_scripts_stay_the_local_user(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as ui:
        gr.Textbox()
    with running_server(tiny_data_dir, tmp_path, flags=["--api"], ui=ui) as srv:
        queue = srv.services.queue
        a, a_cookie = _browser(srv)
        b, b_cookie = _browser(srv)
        ids: list[str] = []
        try:
            assert a_cookie != b_cookie
            again = a.get("/", headers=PAGE)
            assert not _ours(again)  # kept, not replaced
            job = a.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG})
            assert job.status_code == 201
            ids.append(job.json()["id"])
            owner = queue.get(ids[0]).owner
            assert owner.startswith(PREFIX) and owner == PREFIX + a_cookie.split(".")[0]
            assert ids[0] in {j["id"] for j in a.get("/api/v1/jobs").json()["jobs"]}
            assert ids[0] not in {j["id"] for j in b.get("/api/v1/jobs").json()["jobs"]}
            assert b.get(f"/api/v1/jobs/{ids[0]}").status_code == 404
            assert b.post(f"/api/v1/jobs/{ids[0]}/cancel").status_code == 404
            assert not queue.get(ids[0]).state.finished
            # the studio sees the same name the API does
            assert a.get("/config").json()["username"] == owner
            assert b.get("/config").json()["username"] != owner
            with srv.client() as script:  # no cookie: the shared local user, as before
                assert ids[0] not in {j["id"] for j in script.get("/api/v1/jobs").json()["jobs"]}
                assert script.get("/config").json()["username"] == "anonymous"
                assert not _ours(script.get("/api/v1/jobs"))
                mine = script.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG}).json()["id"]
                ids.append(mine)
                assert queue.get(mine).owner == "anonymous"
            forged = a_cookie.split(".")[0] + "." + "0" * 32
            with httpx.Client(
                base_url=srv.url, headers={"Cookie": f"{COOKIE}={forged}"}, timeout=60
            ) as thief:
                assert ids[0] not in {j["id"] for j in thief.get("/api/v1/jobs").json()["jobs"]}
                assert thief.post(f"/api/v1/jobs/{ids[0]}/cancel").status_code == 404
            assert a.post(f"/api/v1/jobs/{ids[0]}/cancel").status_code == 200
        finally:
            a.close()
            b.close()
            for job_id in ids:
                queue.cancel(job_id, by="test", admin=True)
