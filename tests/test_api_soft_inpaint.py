"""Soft inpainting over HTTP: A1111's `alwayson_scripts` "Soft Inpainting" args and the native job fields."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.test_server_harness import Running, running_server
from webui.core.outputs.infotext import parse_infotext
from webui.core.tasks.masks import blur_mask

FAST = dict(prompt="a red cube", steps=3, width=64, height=64, seed=7, cfg_scale=5, denoising_strength=0.8)
ARGS = [True, 1.5, 0.75, 6, 0.25, 1, 3.5]  # A1111's order: enabled, then the six settings
KEYS = {
    "Soft inpainting enabled": "True",
    "Soft inpainting schedule bias": "1.5",
    "Soft inpainting preservation strength": "0.75",
    "Soft inpainting transition contrast boost": "6",
    "Soft inpainting mask influence": "0.25",
    "Soft inpainting difference threshold": "1",
    "Soft inpainting difference contrast": "3.5",
}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tiny_data_dir, tmp_path_factory.mktemp("soft-api")) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _init() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 40, 40), fill=255)
    return mask


def _inputs() -> dict[str, Any]:
    return {"init_images": [_b64(_init())], "mask": _b64(_mask()), "mask_blur": 6, "inpainting_fill": 1}


def test_alwayson_soft_inpainting_args_reach_the_request_and_its_infotext(c: httpx.Client) -> None:
    body = {**FAST, **_inputs(), "inpaint_full_res": False}
    on = c.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"Soft Inpainting": {"args": ARGS}}})
    off = c.post(
        "/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"soft inpainting": {"args": [False]}}}
    )
    assert on.status_code == 200 and off.status_code == 200, on.text + off.text
    text = json.loads(on.json()["info"])["infotexts"][0]
    found = parse_infotext(text)
    assert {k: found.get(k) for k in KEYS} == KEYS
    assert "Soft inpainting" not in json.loads(off.json()["info"])["infotexts"][0]
    assert on.json()["images"][0] != off.json()["images"][0]  # it changed the picture


@pytest.mark.parametrize(
    ("script", "field"),
    [
        ({"SOFT INPAINTING": {"args": [True, 9.5]}}, "alwayson_scripts.SOFT INPAINTING.mask_blend_power"),
        (
            {"Soft Inpainting": {"args": [True, 1, 0.5, 0.5]}},
            "alwayson_scripts.Soft Inpainting.inpaint_detail_preservation",
        ),
        ({"Soft Inpainting": {"args": ["yes"]}}, "alwayson_scripts.Soft Inpainting.soft_inpainting"),
        ({"Soft Inpainting": {"args": [True, *ARGS]}}, "alwayson_scripts.Soft Inpainting.args"),
        ({"Soft Inpainting": {"args": {"mask_blend_pow": 1}}}, "alwayson_scripts.Soft Inpainting.args"),
    ],
)
def test_bad_alwayson_args_are_422_naming_the_field(c: httpx.Client, script: Any, field: str) -> None:
    r = c.post("/sdapi/v1/img2img", json={**FAST, **_inputs(), "alwayson_scripts": script})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_soft_inpainting_is_img2img_only_and_needs_a_mask(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": {"Soft Inpainting": {"args": ARGS}}})
    assert r.status_code == 422 and r.json()["field"] == "alwayson_scripts.Soft Inpainting", r.text
    no_mask = {k: v for k, v in _inputs().items() if k != "mask"}
    r = c.post(
        "/sdapi/v1/img2img", json={**FAST, **no_mask, "alwayson_scripts": {"Soft Inpainting": {"args": ARGS}}}
    )
    assert r.status_code == 422 and r.json()["field"] == "soft_inpainting", r.text


def test_native_jobs_take_the_fields(c: httpx.Client, srv: Running) -> None:
    fields = dict(soft_inpainting=True, mask_blend_power=2.0, composite_difference_contrast=4.0)
    only_masked = dict(inpaint_full_res=True, inpaint_full_res_padding=8)
    request = {**FAST, **_inputs(), **fields, **only_masked}
    r = c.post("/api/v1/jobs", json={"kind": "img2img", "request": request})
    assert r.status_code == 201, r.text
    done = srv.services.queue.wait(r.json()["id"], timeout=120)
    assert done.state.value == "done", done
    with Image.open(done.images[0].path) as im:
        out = np.asarray(im.convert("RGB"))
    init = np.asarray(_init())
    keep = np.asarray(blur_mask(_mask(), 6, 6)) == 0  # "only masked": the box is pasted back softly
    assert np.array_equal(out[keep], init[keep]) and not np.array_equal(out[~keep], init[~keep])
    found = parse_infotext(done.images[0].infotext)
    assert (
        found["Soft inpainting schedule bias"] == "2" and found["Soft inpainting difference contrast"] == "4"
    )
    bad = c.post("/api/v1/jobs", json={"kind": "img2img", "request": {**request, "mask_blend_scale": -1}})
    assert bad.status_code == 422 and bad.json()["field"] == "mask_blend_scale", bad.text
    dd = {**request, "soft_inpainting": False, "differential_diffusion": True}
    r = c.post("/api/v1/jobs", json={"kind": "img2img", "request": dd})
    assert r.status_code == 201, r.text
    done = srv.services.queue.wait(r.json()["id"], timeout=120)
    assert "Differential diffusion: True" in done.images[0].infotext
