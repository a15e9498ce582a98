"""hr_checkpoint_name and the refiner fields over HTTP: A1111's /sdapi/v1/txt2img and img2img, and the
native jobs API, on a running server with two tiny SD1 checkpoints."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_pass_models import B, two_sd1_data_dir
from tests.test_server_harness import Running, make_manager, running_server
from webui.core.outputs.infotext import parse_infotext

FAST: dict[str, Any] = {
    "prompt": "a red cube", "steps": 4, "width": 64, "height": 64, "seed": 7,
    "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
}  # fmt: skip
HIRES: dict[str, Any] = {
    "enable_hr": True,
    "hr_scale": 1.5,
    "hr_second_pass_steps": 2,
    "hr_upscaler": "Latent",
}


@pytest.fixture(scope="module")
def srv(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = two_sd1_data_dir(tiny_files, tmp_path_factory.mktemp("passes-data"))
    tmp = tmp_path_factory.mktemp("passes-api")
    with running_server(data, tmp, manager=make_manager(data, tmp)) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _infotext(body: dict[str, Any]) -> dict[str, str]:
    return parse_infotext(json.loads(body["info"])["infotexts"][0])


def test_sdapi_hires_checkpoint_reaches_the_second_pass(c: httpx.Client) -> None:
    on_b = c.post("/sdapi/v1/txt2img", json={**FAST, **HIRES, "hr_checkpoint_name": B})
    same = c.post("/sdapi/v1/txt2img", json={**FAST, **HIRES, "hr_checkpoint_name": "Use same checkpoint"})
    assert on_b.status_code == 200 and same.status_code == 200, on_b.text + same.text
    assert _infotext(on_b.json())["Hires checkpoint"].startswith(B)
    assert "Hires checkpoint" not in _infotext(same.json())
    assert on_b.json()["images"][0] != same.json()["images"][0]


def test_sdapi_refiner_in_txt2img_and_img2img(c: httpx.Client) -> None:
    refine = {"refiner_checkpoint": B, "refiner_switch_at": 0.5}
    r = c.post("/sdapi/v1/txt2img", json={**FAST, **refine})
    assert r.status_code == 200, r.text
    info = _infotext(r.json())
    assert info["Refiner"].startswith(B) and info["Refiner switch at"] == "0.5"
    init = r.json()["images"][0]
    r = c.post("/sdapi/v1/img2img", json={**FAST, **refine, "init_images": [init], "denoising_strength": 0.5})
    assert r.status_code == 200, r.text
    assert _infotext(r.json())["Refiner switch at"] == "0.5"
    # clients that send the fields at their defaults get no refiner
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "refiner_checkpoint": "", "refiner_switch_at": 0.8})
    assert r.status_code == 200 and "Refiner" not in _infotext(r.json())


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**HIRES, "hr_checkpoint_name": "tiny-sdxl"}, "hr_checkpoint_name"),
        ({**HIRES, "hr_checkpoint_name": "nope"}, "hr_checkpoint_name"),
        ({"refiner_checkpoint": "tiny-sdxl", "refiner_switch_at": 0.5}, "refiner_checkpoint"),
        ({"refiner_checkpoint": B}, "refiner_switch_at"),
        ({"refiner_checkpoint": B, "refiner_switch_at": 2}, "refiner_switch_at"),
    ],
)
def test_sdapi_bad_other_checkpoints_are_422(c: httpx.Client, payload: dict[str, Any], field: str) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, **payload})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_native_jobs_take_the_same_fields(c: httpx.Client) -> None:
    request = {
        "prompt": "a red cube", "steps": 4, "width": 64, "height": 64, "seed": 7, "checkpoint": "tiny-sd1",
        **HIRES, "hr_checkpoint_name": B, "refiner_checkpoint": "tiny-sd1", "refiner_switch_at": 0.5,
    }  # fmt: skip
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": request})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events") as events:
        for _ in events.iter_lines():
            pass
    job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "done", job
    info = parse_infotext(job["images"][0]["infotext"])
    assert info["Hires checkpoint"].startswith(B) and info["Refiner"].startswith("tiny-sd1")
    bad = {**request, "refiner_checkpoint": "tiny-sdxl"}
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": bad})
    assert r.status_code == 422 and r.json()["field"] == "refiner_checkpoint"
    picture = c.get(f"/api/v1/jobs/{job_id}/images/0")
    assert Image.open(io.BytesIO(picture.content)).size == (96, 96)
