"""POST /sdapi/v1/extra-single-image and extra-batch-images over HTTP: the real server, a data folder
with a tiny random Real-ESRGAN model written here (the upscalers extension loads it), real images."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from tests.test_ext_upscalers import basicsr_rrdb
from tests.test_server_harness import Running, running_server

MODEL = "RealESRGAN_x2plus"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("extras-data")
    (data / "models" / "RealESRGAN").mkdir(parents=True)
    save_file(basicsr_rrdb(scale=2), str(data / "models" / "RealESRGAN" / f"{MODEL}.safetensors"))
    with running_server(data, tmp_path_factory.mktemp("extras-api")) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _picture(w: int = 24, h: int = 16, seed: int = 3) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _b64(image: Image.Image, parameters: str | None = None) -> str:
    from PIL.PngImagePlugin import PngInfo

    info = None
    if parameters:
        info = PngInfo()
        info.add_text("parameters", parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def _open(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


def test_upscalers_list_the_model_and_single_image_lanczos_matches_pil(c: httpx.Client) -> None:
    names = [u["name"] for u in c.get("/sdapi/v1/upscalers").json()]
    assert MODEL in names and "Lanczos" in names
    src = _picture()
    r = c.post(
        "/sdapi/v1/extra-single-image",
        json={"image": _b64(src, "a fox\nSteps: 3, Seed: 5"), "upscaler_1": "Lanczos", "upscaling_resize": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"html_info", "image"}
    assert body["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    out = _open(body["image"])
    assert out.size == (48, 32)
    expected = src.resize((48, 32), resample=Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(expected))
    assert out.text["parameters"] == "a fox\nSteps: 3, Seed: 5"  # the source's parameters travel along


def test_single_image_through_the_model_upscaler(c: httpx.Client, srv: Running) -> None:
    src = _picture(16, 16)
    r = c.post(
        "/sdapi/v1/extra-single-image",
        json={"image": _b64(src), "upscaler_1": MODEL, "upscaling_resize": 2},
    )
    assert r.status_code == 200, r.text
    out = np.asarray(_open(r.json()["image"]).convert("RGB"))
    assert out.shape == (32, 32, 3)
    spec = srv.services.engine.extras_upscalers()[MODEL]
    direct = np.asarray(spec(src, 32, 32).convert("RGB"))
    assert np.array_equal(out, direct)  # the job ran the same model on the same pixels
    lanczos = np.asarray(src.resize((32, 32), resample=Image.Resampling.LANCZOS))
    assert not np.array_equal(out, lanczos)


def test_batch_scale_to_with_crop_and_a_blended_second_upscaler(c: httpx.Client) -> None:
    a, b = _picture(30, 20, 1), _picture(20, 30, 2)
    r = c.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": _b64(a), "name": "a.png"}, {"data": _b64(b), "name": "b.png"}],
            "resize_mode": 1,
            "upscaling_resize_w": 40,
            "upscaling_resize_h": 40,
            "upscaling_crop": True,
            "upscaler_1": "Nearest",
            "upscaler_2": "Lanczos",
            "extras_upscaler_2_visibility": 0.5,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Postprocess upscale to: 40x40" in body["html_info"]
    assert "Postprocess upscaler 2: Lanczos" in body["html_info"]
    outs = [np.asarray(_open(x).convert("RGB")) for x in body["images"]]
    assert [o.shape for o in outs] == [(40, 40, 3), (40, 40, 3)]
    # a: 30x20 covers 40x40 at 60x40, centre-cropped: columns 10..50 of the blended 60x40 upscale
    near = np.asarray(a.resize((60, 40), resample=Image.Resampling.NEAREST), dtype=np.float32)
    lanc = np.asarray(a.resize((60, 40), resample=Image.Resampling.LANCZOS), dtype=np.float32)
    blended = (near + (lanc - near) * 0.5)[:, 10:50]
    assert np.abs(outs[0].astype(np.float32) - blended).max() <= 1


def test_none_passes_the_image_through(c: httpx.Client) -> None:
    src = _picture()
    r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(src)})
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p></p>"
    assert np.array_equal(np.asarray(_open(r.json()["image"]).convert("RGB")), np.asarray(src))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"upscaler_1": "Lanczos"}, "image"),
        ({"image": "not base64!", "upscaler_1": "Lanczos"}, "image"),
        ({"image": "https://example.com/a.png", "upscaler_1": "Lanczos"}, "image"),
        ({"upscaler_1": "Nope"}, "upscaler_1"),
        ({"upscaler_1": "Lanczos", "upscaler_2": "Nope", "extras_upscaler_2_visibility": 0.3}, "upscaler_2"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 0}, "upscaling_resize"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 8.5}, "upscaling_resize"),
        ({"upscaler_1": "Lanczos", "resize_mode": 2}, "resize_mode"),
        ({"upscaler_1": "Lanczos", "extras_upscaler_2_visibility": 2}, "extras_upscaler_2_visibility"),
        ({"upscaler_1": "Lanczos", "gfpgan_visibility": 0.5}, "gfpgan_visibility"),
        ({"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 9000}, "upscaling_resize_w"),
        (
            {
                "upscaler_1": "Lanczos",
                "resize_mode": 1,
                "upscaling_resize_w": 8192,
                "upscaling_resize_h": 8192,
            },
            "upscaling_resize_w",
        ),  # 24x16 would be upscaled x341 before the crop
    ],
)
def test_bad_requests_are_422_naming_the_field(c: httpx.Client, payload: dict, field: str) -> None:
    body = {"image": _b64(_picture()), **payload} if field != "image" else payload
    r = c.post("/sdapi/v1/extra-single-image", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.text


def test_a_batch_names_the_bad_image(c: httpx.Client) -> None:
    r = c.post(
        "/sdapi/v1/extra-batch-images",
        json={"imageList": [{"data": _b64(_picture())}, {"data": "AAAA"}], "upscaler_1": "Lanczos"},
    )
    assert r.status_code == 422 and r.json()["field"] == "imageList.1.data", r.text
    too_many = [{"data": "AAAA"}] * 101  # refused by count, before any is decoded
    r = c.post("/sdapi/v1/extra-batch-images", json={"imageList": too_many, "upscaler_1": "Lanczos"})
    assert r.status_code == 422 and r.json()["field"] == "imageList", r.text


def test_the_upscale_is_a_job_of_the_caller_and_writes_nothing_to_outputs(
    c: httpx.Client, srv: Running
) -> None:
    before = set((srv.config.outputs_dir).rglob("*.png"))
    r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(_picture()), "upscaler_1": "Nearest"})
    assert r.status_code == 200
    jobs = c.get("/api/v1/jobs").json()
    listed = jobs["jobs"] if isinstance(jobs, dict) else jobs
    assert listed[0]["kind"] == "extras" and listed[0]["state"] == "done"
    assert set((srv.config.outputs_dir).rglob("*.png")) == before


def test_native_api_runs_an_extras_job_and_serves_its_image(c: httpx.Client, srv: Running) -> None:
    src = _picture(20, 12)
    r = c.post(
        "/api/v1/jobs",
        json={
            "kind": "extras",
            "request": {"images": [_b64(src)], "upscaler_1": "Nearest", "upscaling_resize": 3},
        },
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    info = srv.services.queue.wait(job_id, 60)
    assert info.state.value == "done", info.error
    got = c.get(f"/api/v1/jobs/{job_id}")
    assert got.json()["kind"] == "extras"
    image = c.get(got.json()["images"][0]["url"])
    assert image.status_code == 200
    out = Image.open(io.BytesIO(image.content))
    assert out.size == (60, 36)
    assert np.array_equal(
        np.asarray(out.convert("RGB")), np.asarray(src.resize((60, 36), Image.Resampling.NEAREST))
    )
    saved = Path(info.images[0].path)
    assert saved.parent == srv.config.outputs_dir / "extras-images" and re.fullmatch(
        r"\d{5}\.png", saved.name
    )
    assert "Postprocess upscaler: Nearest" in Image.open(saved).text["postprocessing"]


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({}, "images"),
        ({"images": ["AAAA"]}, "images.0"),
        ({"images": [], "x": 1}, "images"),
        ({"images": ["x"], "prompt": "a"}, "prompt"),
        ({"images": ["x"], "upscaler_1": "Nearest", "upscaling_crop": "false"}, "upscaling_crop"),
    ],
)
def test_native_extras_errors_name_the_field(c: httpx.Client, request_body: dict, field: str) -> None:
    if request_body.get("images") == ["x"] or field == "upscaling_crop":
        request_body = {**request_body, "images": [_b64(_picture())]}
    r = c.post("/api/v1/jobs", json={"kind": "extras", "request": request_body})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_history_lists_an_upscale_with_what_it_did(c: httpx.Client, srv: Running) -> None:
    from webui.ui.context import StudioContext
    from webui.ui.history_tab import history_rows

    r = c.post(
        "/sdapi/v1/extra-single-image",
        json={"image": _b64(_picture()), "upscaler_1": "Nearest", "upscaling_resize": 3},
    )
    assert r.status_code == 200
    rows, images = history_rows(StudioContext(srv.services), "anonymous")
    row = next(row for row in rows if row[1] == "extras")
    assert row[4] == "Upscale 1 image x3.0 with Nearest" and row[3] == 1
    assert any(caption == "image 1" for _, caption in images)


def test_face_restoration_without_its_model_is_422_naming_the_field_and_folder(
    c: httpx.Client, srv: Running
) -> None:
    assert c.get("/sdapi/v1/face-restorers").json() == []
    for field, folder in (("gfpgan_visibility", "GFPGAN"), ("codeformer_visibility", "Codeformer")):
        r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(_picture()), field: 0.5})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["field"] == field and f"models/{folder}" in body["error"], body
    r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(_picture()), "codeformer_weight": 1.5})
    assert r.status_code == 422 and r.json()["field"] == "codeformer_weight", r.text
