"""/api/v1 jobs over HTTP, with three logged-in users: submit, events, images, ownership, fair order."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext

USERS = {"ann": "pw-a", "ben": "pw-b", "cy": "pw-c"}
AUTH = ["--api", "--api-auth", ",".join(f"{u}:{p}" for u, p in USERS.items())]
FAST: dict[str, Any] = {"prompt": "a blue sphere", "steps": 2, "width": 64, "height": 64, "seed": 3}
SLOW: dict[str, Any] = {**FAST, "steps": 150}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("jobs-api")
    with running_server(
        tiny_data_dir, tmp, flags=AUTH, manager=make_manager(tiny_data_dir, tmp), auth_delay=0.01
    ) as running:
        yield running


def _as(srv: Running, user: str) -> httpx.Client:
    return srv.client(auth=(user, USERS[user]))


def _submit(c: httpx.Client, request: dict[str, Any]) -> str:
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": request})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "state", "queue_position"}
    return str(body["id"])


def _events(c: httpx.Client, job_id: str, last: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    out: list[tuple[int, str, dict[str, Any]]] = []
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if "event" in fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return out


def _wait_done(c: httpx.Client, job_id: str) -> dict[str, Any]:
    events = _events(c, job_id)
    assert events[-1][1] in ("done", "failed", "cancelled")
    r = c.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200
    return dict(r.json())


def test_submit_stream_fetch_and_resume(srv: Running) -> None:
    with _as(srv, "ann") as c:
        job_id = _submit(c, {**FAST, "batch_size": 2})
        events = _events(c, job_id)
        kinds = [k for _, k, _ in events]
        assert kinds[-1] == "done" and "progress" in kinds
        seqs = [s for s, _, _ in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        job = events[-1][2]["job"]
        assert job["state"] == "done" and job["owner"] == "ann" and len(job["images"]) == 2
        assert "path" not in json.dumps(job["images"])  # result files are fetched by index only
        # resumable: after the last-but-one event only the final one comes again
        again = _events(c, job_id, last=seqs[-2])
        assert [k for _, k, _ in again] == ["done"]
        for n, image in enumerate(job["images"]):
            r = c.get(f"/api/v1/jobs/{job_id}/images/{n}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.headers["x-content-type-options"] == "nosniff"
            picture = Image.open(io.BytesIO(r.content))
            assert read_infotext(picture) == image["infotext"] and picture.size == (64, 64)
        assert c.get(f"/api/v1/jobs/{job_id}/preview").status_code in (200, 204)
        listed = c.get("/api/v1/jobs").json()["jobs"]
        assert job_id in [j["id"] for j in listed] and all(j["owner"] == "ann" for j in listed)


def test_other_users_cannot_see_or_cancel_a_job(srv: Running) -> None:
    with _as(srv, "ann") as ann, _as(srv, "ben") as ben:
        job_id = _submit(ann, SLOW)
        for method, path in (
            ("GET", f"/api/v1/jobs/{job_id}"),
            ("POST", f"/api/v1/jobs/{job_id}/cancel"),
            ("POST", f"/api/v1/jobs/{job_id}/skip"),
            ("GET", f"/api/v1/jobs/{job_id}/events"),
            ("GET", f"/api/v1/jobs/{job_id}/images/0"),
            ("GET", f"/api/v1/jobs/{job_id}/preview"),
        ):
            assert ben.request(method, path).status_code == 404, path
        assert job_id not in [j["id"] for j in ben.get("/api/v1/jobs").json()["jobs"]]
        ben.post("/sdapi/v1/interrupt")  # A1111's interrupt stops only the caller's own job
        assert ann.get(f"/api/v1/jobs/{job_id}").json()["state"] in ("queued", "running")
        r = ann.post(f"/api/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200
        job = _wait_done(ann, job_id)
        assert job["state"] == "cancelled"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/{id}/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/jobs/{id}/images/%2e%2e",
        "/api/v1/jobs/{id}/images/-1",
        "/api/v1/jobs/{id}/images/99",
        "/api/v1/jobs/{id}/images/0x0",
        "/api/v1/jobs/{id}/images/..\\..\\config.json",
        "/api/v1/jobs/..%2F..%2Fconfig.json/images/0",
        "/api/v1/jobs/%2Fetc%2Fpasswd/images/0",
        "/api/v1/jobs/{id}/images/%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_on_image_routes(srv: Running, path: str) -> None:
    with _as(srv, "cy") as c:
        job_id = _submit(c, FAST)
        _wait_done(c, job_id)
        r = c.get(path.replace("{id}", job_id))
        assert r.status_code in (403, 404), r.text
        assert b"root:" not in r.content and b"sd_model" not in r.content


def test_bad_native_requests(srv: Running) -> None:
    with _as(srv, "cy") as c:
        cases = [
            ({"kind": "txt2img", "request": {"width": 100000}}, "width"),
            ({"kind": "txt2img", "request": {"outdir": "../x"}}, "outdir"),
            ({"kind": "txt2img", "request": {"checkpoint": "../../secret.ckpt"}}, "checkpoint"),
            ({"kind": "txt2img", "request": {"sampler_name": "Nope"}}, "sampler_name"),
            ({"kind": "paint", "request": {}}, "kind"),
            ({"kind": "txt2img", "request": [1]}, "request"),
        ]
        for body, field in cases:
            r = c.post("/api/v1/jobs", json=body)
            assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)


def test_twenty_clients_three_users_fair_order(srv: Running) -> None:
    counts = {"ann": 9, "ben": 7, "cy": 4}
    # Occupy the worker first so that every client's job is queued before the first of them starts.
    with _as(srv, "ann") as ann:
        blocker = _submit(ann, {**FAST, "steps": 150})
    results: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(user: str, n: int) -> None:
        with _as(srv, user) as c:
            r = c.post("/sdapi/v1/txt2img", json={**FAST, "seed": 1000 + n, "prompt": f"{user} {n}"})
            with lock:
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    results.append((user, r.json()))

    threads = [
        threading.Thread(target=client, args=(user, n)) for user, k in counts.items() for n in range(k)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert len(results) == 20 and all(len(body["images"]) == 1 for _, body in results)
    for user, body in results:
        assert json.loads(body["info"])["prompt"].startswith(user)
    jobs = []
    for user in counts:
        with _as(srv, user) as c:
            jobs += [j for j in c.get("/api/v1/jobs").json()["jobs"] if j["id"] != blocker]
    recent = sorted((j for j in jobs if j["request"]["seed"] >= 1000), key=lambda j: j["started"])
    assert len(recent) == 20
    order = [j["owner"] for j in recent]
    assert all(order[i] != order[i + 1] for i in range(3 * min(counts.values()) - 1)), order
    for i in range(0, 3 * min(counts.values()), 3):
        assert sorted(order[i : i + 3]) == ["ann", "ben", "cy"], order  # round-robin while all wait


def test_two_clients_on_different_checkpoints_get_their_own_model(
    srv: Running, tiny_files: dict[str, Path]
) -> None:
    titles = {Path(m["filename"]).name: m["title"] for m in _as(srv, "ann").get("/sdapi/v1/sd-models").json()}
    out: dict[str, str] = {}

    def client(user: str, arch: str) -> None:
        with _as(srv, user) as c:
            override = {"sd_model_checkpoint": titles[tiny_files[arch].name]}
            r = c.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": override})
            out[arch] = json.loads(r.json()["info"])["infotexts"][0]

    threads = [
        threading.Thread(target=client, args=("ann", "sd1")),
        threading.Thread(target=client, args=("ben", "sd1-inpaint")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for arch in ("sd1", "sd1-inpaint"):
        expected = hashlib.sha256(tiny_files[arch].read_bytes()).hexdigest()[:10]
        assert parse_infotext(out[arch])["Model hash"] == expected


def test_progress_reports_the_callers_job(srv: Running) -> None:
    with _as(srv, "ben") as ben, _as(srv, "cy") as cy:
        job_id = _submit(ben, SLOW)
        for _ in range(200):
            body = ben.get("/sdapi/v1/progress").json()
            if body["current_task"] == job_id and body["state"]["sampling_step"] > 0:
                break
        assert body["current_task"] == job_id and body["state"]["job_count"] >= 1
        assert 0 <= body["progress"] <= 1 and body["state"]["sampling_steps"] == 150
        other = cy.get("/sdapi/v1/progress").json()  # the running one: busy, but not whose or what
        assert other["state"]["job_count"] >= 1 and other["current_task"] is None
        assert other["current_image"] is None
        assert ben.post("/sdapi/v1/interrupt").json() == {}
        job = _wait_done(ben, job_id)
        assert job["state"] == "cancelled" and job["interrupted"]


def test_deleting_a_finished_job_removes_its_images_and_its_record(srv: Running) -> None:
    with _as(srv, "ann") as ann, _as(srv, "ben") as ben:
        job_id = _submit(ann, {**FAST, "batch_size": 2})
        done = _wait_done(ann, job_id)
        info = srv.services.queue.get(job_id)
        paths = [Path(info.images[n].path) for n in range(2)] + [Path(info.grid_path)]  # and the grid
        assert done["state"] == "done" and all(p.is_file() for p in paths)
        assert ben.delete(f"/api/v1/jobs/{job_id}").status_code == 404  # not ben's: not even seen
        r = ann.delete(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200 and r.json() == {"id": job_id, "deleted": True, "files_removed": 3}
        assert not any(p.exists() for p in paths)
        assert ann.get(f"/api/v1/jobs/{job_id}").status_code == 404
        assert job_id not in [j["id"] for j in ann.get("/api/v1/jobs").json()["jobs"]]


def test_a_job_that_is_not_finished_is_not_deleted(srv: Running) -> None:
    with _as(srv, "ann") as ann:
        job_id = _submit(ann, {**FAST, "steps": 150, "width": 256, "height": 256})
        r = ann.delete(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
        ann.post(f"/api/v1/jobs/{job_id}/cancel")
        assert _wait_done(ann, job_id)["state"] == "cancelled"
        assert ann.delete(f"/api/v1/jobs/{job_id}").status_code == 200
