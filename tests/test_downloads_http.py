"""Downloads as queued jobs over HTTP, on a real 127.0.0.1 server fetching from a real 127.0.0.1 file
server (allowed with --download-hosts, as an admin would allow a LAN mirror): admins only, progress in
bytes in the job's events, the file listed at once with its A1111 title, a wrong hash or a cancel leaves
nothing, a host off the list or on the local network is a 422 naming the url, tokens are never shown."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.download_server import Served, serving
from tests.test_server_harness import Running, running_server

ROOT, ALICE = ("root", "pr"), ("alice", "pa")


@pytest.fixture(scope="module")
def files() -> Iterator[Served]:
    with serving() as s:
        yield s


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("dl-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    tmp = tmp_path_factory.mktemp("dl-srv")
    flags = ["--api", "--api-auth", "alice:pa,root:pr", "--admin", "root", "--download-hosts", "127.0.0.1"]
    with running_server(data, tmp, flags=flags) as r:
        yield r


def _submit(c: httpx.Client, **request: str) -> httpx.Response:
    return c.post("/api/v1/jobs", json={"kind": "download", "request": request})


def _wait(c: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def _leftovers(srv: Running) -> list[str]:
    staging = srv.config.models_dir / ".downloads"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def test_only_admins_download(srv: Running, files: Served) -> None:
    with srv.client(ALICE) as c:
        r = _submit(c, url=files.base + "/never.safetensors")
    assert r.status_code == 403 and "only an admin" in r.json()["detail"]
    assert "/never.safetensors" not in [p for p, _ in files.seen]


def test_a_download_job_reports_bytes_and_lists_the_model(
    srv: Running, files: Served, tiny_files: dict[str, Path]
) -> None:
    body = tiny_files["sd1"].read_bytes()
    files.files["/slow/fresh.safetensors"] = body
    files.slow["/slow/fresh.safetensors"] = 0.005
    with srv.client(ROOT) as c:
        r = _submit(c, url=files.base + "/slow/fresh.safetensors")
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        progress = []
        with c.stream("GET", f"/api/v1/jobs/{job_id}/events") as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["kind"] == "progress":
                        progress.append(event["job"]["progress"])
                    if event["kind"] in ("done", "failed", "cancelled"):
                        break
        job = _wait(c, job_id)
        models = c.get("/sdapi/v1/sd-models").json()
    assert job["state"] == "done", job
    output = job["output"]
    assert isinstance(output, dict)
    assert output["path"] == "models/Stable-diffusion/fresh.safetensors"
    assert output["kind"] == "checkpoint" and output["bytes"] == len(body)
    assert output["title"] == f"fresh.safetensors [{output['sha256'][:10]}]" == job["model_title"]
    assert job["warnings"] == [
        "fresh.safetensors: the source publishes no sha256, so the file could not be verified"
    ]
    assert output["title"] in [m["title"] for m in models]  # listed without a refresh
    assert progress and all(p["bytes_total"] == len(body) for p in progress)
    assert any(0 < p["bytes_done"] < len(body) for p in progress) and progress[-1]["speed"] >= 0
    assert (srv.config.ckpt_dirs[0] / "fresh.safetensors").read_bytes() == body
    assert _leftovers(srv) == []


def test_a_wrong_hash_fails_naming_the_field_and_keeps_nothing(
    srv: Running, files: Served, tiny_files: dict[str, Path]
) -> None:
    files.files["/wrong.safetensors"] = tiny_files["sd1"].read_bytes()
    with srv.client(ROOT) as c:
        job = _wait(c, _submit(c, url=files.base + "/wrong.safetensors", sha256="0" * 64).json()["id"])
    assert job["state"] == "failed" and job["error_field"] == "sha256"
    assert "sha256" in str(job["error"]) and not (srv.config.ckpt_dirs[0] / "wrong.safetensors").exists()
    assert _leftovers(srv) == []


def test_a_cancelled_download_leaves_nothing(
    srv: Running, files: Served, tiny_files: dict[str, Path]
) -> None:
    files.files["/slow/cancel.safetensors"] = tiny_files["sd1"].read_bytes()
    files.slow["/slow/cancel.safetensors"] = 0.05
    with srv.client(ROOT) as c:
        job_id = _submit(c, url=files.base + "/slow/cancel.safetensors").json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/jobs/{job_id}").json()["progress"].get("bytes_done", 0) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        c.post(f"/api/v1/jobs/{job_id}/cancel")
        job = _wait(c, job_id)
    assert job["state"] == "cancelled"
    assert not (srv.config.ckpt_dirs[0] / "cancel.safetensors").exists() and _leftovers(srv) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://huggingface.co/x.safetensors", "https://"),
        ("https://sfumato-elsewhere.example/x.safetensors", "not on the download allow-list"),
        ("https://huggingface.co/x?token=abc", "credential"),
    ],
)
def test_refused_urls_are_a_422_naming_the_url(srv: Running, url: str, words: str) -> None:
    with srv.client(ROOT) as c:
        r = _submit(c, url=url)
    assert r.status_code == 422 and words in r.text and "url" in r.text


def test_unknown_fields_are_a_422(srv: Running) -> None:
    with srv.client(ROOT) as c:
        r = _submit(c, url="https://huggingface.co/a/b/resolve/main/c.safetensors", folder="/etc")
    assert r.status_code == 422 and "folder" in r.text


def test_the_setting_adds_hosts_but_never_local_ones_and_tokens_are_never_shown(srv: Running) -> None:
    with srv.client(ROOT) as c:
        r = c.post(
            "/api/v1/downloads/settings",
            json={"download_hosts": "localhost, mirror.example", "hf_token": "hf_SECRETSECRET"},
        )
        assert r.status_code == 200 and "hf_SECRETSECRET" not in r.text
        assert r.json()["hf_token_set"] is True and "localhost" in r.json()["allowed_hosts"]
        refused = _submit(c, url="http://localhost:9/x.safetensors")
        options = c.get("/sdapi/v1/options").text
        view = c.get("/api/v1/downloads/settings").text
        c.post("/api/v1/downloads/settings", json={"download_hosts": "", "hf_token": ""})
    assert refused.status_code == 422 and "private or local address" in refused.text
    assert "hf_SECRETSECRET" not in options and "hf_SECRETSECRET" not in view
    assert srv.services.settings.get("hf_token") == ""
    with srv.client(ALICE) as c:
        assert c.post("/api/v1/downloads/settings", json={"hf_token": "x"}).status_code == 403
        assert c.get("/api/v1/downloads/settings").status_code == 403
        starters = c.get("/api/v1/downloads/starters").json()
    assert {"size_bytes", "license", "url"} <= set(starters[0]) and len(starters) == 3


def test_a_bad_host_in_the_setting_is_a_422_naming_it(srv: Running) -> None:
    with srv.client(ROOT) as c:
        r = c.post("/api/v1/downloads/settings", json={"download_hosts": "ok.example, not a host!"})
    assert r.status_code == 422 and "download_hosts" in r.text and "not a host" in r.text
    assert srv.services.settings.get("download_hosts") == ""
