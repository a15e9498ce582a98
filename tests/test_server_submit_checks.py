"""What a job would fail on before any work is refused when it is submitted, with 422 naming the field:
unknown styles, templates the wildcards extension cannot read, models deleted since they were listed,
and fields of the wrong type (issue 22 items 18 and 24). Nothing is queued for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from tests.test_server_harness import running_server

FAST: dict[str, Any] = {"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": 1}


def _refused(r: httpx.Response, field: str) -> str:
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json()["field"] == field, r.json()
    return str(r.json()["error"])


def test_unknown_styles_bad_templates_and_bad_types_are_refused_at_submit(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    with running_server(tiny_data_dir, tmp_path) as srv, srv.client() as c:
        queue = srv.services.queue
        before = len(queue.list())
        said = _refused(
            c.post("/api/v1/jobs", json={"request": {**FAST, "styles": ["no such style"]}}), "styles"
        )
        assert "no such style" in said
        _refused(c.post("/sdapi/v1/txt2img", json={**FAST, "styles": ["no such style"]}), "styles")
        _refused(c.post("/api/v1/jobs", json={"request": {**FAST, "prompt": "a {red|blue cube"}}), "prompt")
        _refused(
            c.post("/api/v1/jobs", json={"request": {**FAST, "negative_prompt": "{2$$a|b"}}),
            "negative_prompt",
        )
        for value in ("yes", 1, None, "false"):
            said = _refused(
                c.post("/api/v1/jobs", json={"request": {**FAST, "save_images": value}}), "save_images"
            )
            assert "true or false" in said
        assert len(queue.list()) == before  # nothing was queued
        ok = c.post(
            "/api/v1/jobs", json={"request": {**FAST, "prompt": "a {red|blue} cube", "save_images": False}}
        )
        assert ok.status_code == 201, ok.text
        assert queue.wait(ok.json()["id"], timeout=300).state.value == "done"


def test_a_model_deleted_since_it_was_listed_is_refused_at_submit(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    source = next(iter(tiny_files.values()))
    os.link(source, ckpts / "kept.safetensors")
    os.link(source, ckpts / "gone.safetensors")
    with running_server(data, tmp_path) as srv, srv.client() as c:
        titles = [m["model_name"] for m in c.get("/sdapi/v1/sd-models").json()]
        assert "gone" in titles
        (ckpts / "gone.safetensors").unlink()
        said = _refused(
            c.post("/api/v1/jobs", json={"request": {**FAST, "checkpoint": "gone"}}), "checkpoint"
        )
        assert "deleted or moved" in said and str(ckpts) not in said
        override = {"sd_model_checkpoint": "gone"}
        _refused(c.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": override}), "checkpoint")
        assert srv.services.queue.list() == []
        ok = c.post("/api/v1/jobs", json={"request": {**FAST, "checkpoint": "kept"}})
        assert ok.status_code == 201, ok.text
