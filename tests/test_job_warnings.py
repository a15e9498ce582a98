"""A job's warnings (a missing LoRA) are kept on the job and returned by both APIs, not dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.jobs.info import JobImage

MISSING = "<lora:doesnotexist:1>"
FAST: dict[str, Any] = {"prompt": f"a red cube {MISSING}", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("warnings")
    with running_server(tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp)) as running:
        yield running


def _names_missing_lora(warnings: list[str]) -> bool:
    return any("doesnotexist" in w and "not found" in w for w in warnings)


def test_a1111_txt2img_info_lists_the_missing_lora(srv: Running) -> None:
    with srv.client() as c:
        r = c.post("/sdapi/v1/txt2img", json=FAST)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert _names_missing_lora(info["warnings"]), info["warnings"]


def test_a1111_txt2img_without_problems_has_an_empty_warnings_list(srv: Running) -> None:
    with srv.client() as c:
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "prompt": "a red cube"})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["warnings"] == []


def test_native_job_keeps_the_warning_in_the_store(srv: Running) -> None:
    with srv.client() as c:
        r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        srv.services.queue.wait(job_id, timeout=120)
        job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "done" and _names_missing_lora(job["warnings"]), job
    row = srv.services.queue._store.get(job_id)  # what survives a restart: the stored record
    assert row is not None and _names_missing_lora(row.result["images"][0]["warnings"])


def test_job_image_json_round_trip_keeps_warnings_and_reads_old_records() -> None:
    image = JobImage("a.png", 1, 2, "text", ("LoRA 'x' not found",))
    assert JobImage.from_json(image.to_json()) == image
    assert JobImage.from_json({"path": "a.png", "seed": 1, "subseed": 2, "infotext": "t"}).warnings == ()
