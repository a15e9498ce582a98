"""Plugin API 2 over HTTP: extension_args on /api/v1/jobs and alwayson_scripts on /sdapi, checked by the
extension's own fields (422 naming extension and field), images in them as base64, and the routes an
extension declares, behind the login. The server loads tests/fixtures_extensions/residual_probe as a
user extension."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_api_jobs import _submit, _wait_done
from tests.test_plugins_api2 import FIXTURES, data_url
from tests.test_server_harness import Running, make_manager, running_server

AUTH = ["--api", "--api-auth", "ann:pw-a", "--admin", "ann"]
FAST: dict[str, Any] = {"prompt": "a blue sphere", "steps": 2, "width": 64, "height": 64, "seed": 3}
GREY = Image.new("RGB", (16, 16), (128, 128, 128))


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("api2-data")
    (data / "models").symlink_to(tiny_data_dir / "models", target_is_directory=True)
    shutil.copytree(FIXTURES / "residual_probe", data / "extensions" / "residual_probe")
    tmp = tmp_path_factory.mktemp("api2")
    with running_server(
        data, tmp, flags=AUTH, manager=make_manager(tiny_data_dir, tmp), auth_delay=0.01
    ) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client(auth=("ann", "pw-a")) as client:
        yield client


def _calls(c: httpx.Client) -> int:
    r = c.get("/api/v1/extensions/residual_probe/calls")
    assert r.status_code == 200, r.text
    return int(r.json()["calls"])


def test_native_jobs_take_extension_args_with_an_image(c: httpx.Client) -> None:
    before = _calls(c)
    args = {"residual_probe": {"strength": 1.0, "hint": data_url(GREY), "mode": "subtract"}}
    job = _wait_done(c, _submit(c, {**FAST, "extension_args": args}))
    assert job["state"] == "done", job
    assert _calls(c) == before + FAST["steps"]  # the hook ran at every step of the stored job
    job = _wait_done(c, _submit(c, FAST))
    assert job["state"] == "done" and _calls(c) == before + FAST["steps"]


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        ({"residual_probe": {"strength": 5}}, "extension_args.residual_probe.strength", "at most 2"),
        ({"residual_probe": {"mode": "mul"}}, "extension_args.residual_probe.mode", "one of"),
        ({"residual_probe": {"wrap": "yes"}}, "extension_args.residual_probe.wrap", "true or false"),
        ({"residual_probe": {"hint": "bm90IGFuIGltYWdl"}}, "extension_args.residual_probe.hint", "image"),
        ({"residual_probe": {"colour": 1}}, "extension_args.residual_probe.colour", "unknown field"),
        ({"nope": {}}, "extension_args", "unknown extension 'nope'"),
        ([1], "extension_args", "object"),
    ],
)
def test_bad_extension_args_are_422_naming_extension_and_field(
    c: httpx.Client, args: Any, field: str, words: str
) -> None:
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": {**FAST, "extension_args": args}})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.text, r.text


def test_sdapi_alwayson_scripts_reach_the_extension(c: httpx.Client) -> None:
    before = _calls(c)
    scripts = {"Residual probe": {"args": {"strength": 0.5, "hint": data_url(GREY).split(",", 1)[1]}}}
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": scripts})
    assert r.status_code == 200, r.text
    assert _calls(c) == before + FAST["steps"]
    bad = {"residual_probe": {"args": {"area": "http://127.0.0.1:9/mask.png"}}}
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": bad})
    assert r.status_code == 422 and r.json()["field"] == "extension_args.residual_probe.area", r.text


def test_extension_routes_are_mounted_behind_the_login(srv: Running, c: httpx.Client) -> None:
    assert c.get("/residual_probe/version").json() == {"version": 2}
    assert c.get("/api/v1/extensions/residual_probe/nothing").status_code == 404
    with srv.client() as anonymous:
        for path in ("/api/v1/extensions/residual_probe/calls", "/residual_probe/version"):
            assert anonymous.get(path).status_code == 401, path
    with srv.client(auth=("ann", "wrong")) as wrong:
        assert wrong.get("/api/v1/extensions/residual_probe/calls").status_code == 401


def _pixels(c: httpx.Client, request: dict[str, Any]) -> np.ndarray:
    job_id = _submit(c, request)
    assert _wait_done(c, job_id)["state"] == "done"
    r = c.get(f"/api/v1/jobs/{job_id}/images/0")
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_extension_settings_are_stored_with_the_others_and_reach_the_hooks(
    srv: Running, c: httpx.Client
) -> None:
    r = c.post("/sdapi/v1/options", json={"residual_probe.scale": 9})
    assert r.status_code == 422 and r.json()["field"] == "residual_probe.scale", r.text
    controlled = {**FAST, "extension_args": {"residual_probe": {"strength": 1.0}}}
    try:
        assert c.post("/sdapi/v1/options", json={"residual_probe.scale": 0}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["residual_probe.scale"] == 0.0
        stored = json.loads(srv.config.settings_path.read_text(encoding="utf-8"))
        assert stored["residual_probe.scale"] == 0.0
        # scale 0: zero residuals, so the controlled job makes exactly the plain picture
        assert np.array_equal(_pixels(c, controlled), _pixels(c, FAST))
    finally:
        assert c.post("/sdapi/v1/options", json={"residual_probe.scale": 1.0}).status_code == 200
    assert not np.array_equal(_pixels(c, controlled), _pixels(c, FAST))
