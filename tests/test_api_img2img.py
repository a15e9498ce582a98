"""POST /sdapi/v1/img2img and txt2img hires fix over HTTP, against the real server and the tiny models."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.test_server_harness import Running, running_server

FAST = dict(prompt="a red cube", steps=3, width=64, height=64, seed=7, cfg_scale=5)


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tiny_data_dir, tmp_path_factory.mktemp("img2img-api")) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _b64(image: Image.Image, data_url: bool = False) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_img2img_with_a_data_url_init_image_and_a_mask_keeps_unmasked_pixels(c: httpx.Client) -> None:
    init = _picture()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 30, 30), fill=255)
    r = c.post(
        "/sdapi/v1/img2img",
        json={
            **FAST,
            "init_images": [_b64(init, data_url=True)],
            "mask": _b64(mask),
            "mask_blur": 0,
            "denoising_strength": 1.0,
            "inpainting_fill": 1,
            "inpaint_full_res": False,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    out = np.asarray(_image(body["images"][0]))
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert "Denoising strength: 1" in info["infotexts"][0]


def test_img2img_refuses_an_image_url_naming_the_field(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/img2img", json={**FAST, "init_images": ["http://169.254.169.254/latest"]})
    assert r.status_code == 422
    assert "init_images" in r.text


def test_txt2img_hires_fix_over_the_api(c: httpx.Client) -> None:
    r = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.5},
    )
    assert r.status_code == 200, r.text
    assert _image(r.json()["images"][0]).size == (96, 96)
    assert "Hires upscale: 1.5" in json.loads(r.json()["info"])["infotexts"][0]


def test_alwayson_scripts_reach_the_extension_by_name(c: httpx.Client) -> None:
    payload = {**FAST, "prompt": "a {red|green|blue} cube", "seed": 11}
    on = c.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"wildcards": {"args": [True]}}})
    off = c.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"wildcards": {"args": [False]}}})
    assert on.status_code == 200 and off.status_code == 200, on.text + off.text
    on_text = json.loads(on.json()["info"])["infotexts"][0]
    off_text = json.loads(off.json()["info"])["infotexts"][0]
    assert on_text.split("\n")[0] in ("a red cube", "a green cube", "a blue cube")
    assert "Template: " in on_text
    assert off_text.startswith("a {red|green|blue} cube")
    bad = c.post("/sdapi/v1/txt2img", json={**payload, "alwayson_scripts": {"nope": {"args": []}}})
    assert bad.status_code == 422 and "alwayson_scripts" in bad.text


def test_xyz_plot_script_over_the_api(c: httpx.Client) -> None:
    # A1111 1.10's layout: x_type (its txt2img axis index: 1 Seed, 4 Steps), x_values, x_values_dropdown,
    # y_type, y_values, y_values_dropdown, z..., draw_legend, include_lone_images, ...
    args = [1, "21, 22", [], 4, "2, 3", [], 0, "", [], True, True, *[False] * 5, 0, False]
    body = {**FAST, "script_name": "X/Y/Z plot", "script_args": args}
    r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    pictures = [_image(b) for b in r.json()["images"]]
    assert len(pictures) == 1 + 4 and info["index_of_first_image"] == 1
    assert pictures[0].size[0] > 2 * 64 and pictures[0].size[1] > 2 * 64  # a labelled 2x2 grid
    assert sorted(info["all_seeds"]) == [21, 21, 22, 22]
    steps = sorted(t.split("Steps: ")[1].split(",")[0] for t in info["infotexts"][1:])
    assert steps == ["2", "2", "3", "3"]
    bad = c.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "nope"})
    assert bad.status_code == 422 and "script_name" in bad.text
    bad_args = c.post(
        "/sdapi/v1/txt2img", json={**FAST, "script_name": "x/y/z plot", "script_args": {"q": 1}}
    )
    assert bad_args.status_code == 422 and "script_args" in bad_args.text
