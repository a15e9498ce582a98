"""The detailer end to end over HTTP: an unmodified ADetailer payload on /sdapi/v1/txt2img, on the tiny
SD1 model, with a tiny YOLOv8-shaped ONNX detector in models/adetailer whose one box sits in the middle
of the picture (its score follows the picture's brightest pixel, so any real output is detected)."""

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
from PIL import Image

from tests.fixtures_detailer import save_tiny_yolo, yolo_candidates
from tests.test_server_harness import Running, make_manager, running_server

FAST: dict[str, Any] = {"prompt": "a face", "steps": 2, "width": 64, "height": 64, "seed": 11}
# 64 px -> 640 px for the detector (x10): a 200 px box at the centre is (22, 22)-(42, 42) in the picture
BOX = (22, 22, 42, 42)
DILATE = 4
UNIT = {"ad_model": "face_yolov8n.pt", "ad_dilate_erode": DILATE, "ad_denoising_strength": 0.9}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("ad-data")
    (data / "models").mkdir()
    for sub in (tiny_data_dir / "models").iterdir():
        (data / "models" / sub.name).symlink_to(sub, target_is_directory=sub.is_dir())
    (data / "models" / "adetailer").mkdir()
    (data / "models" / "adetailer" / "broken.onnx").write_bytes(b"not an onnx model")
    save_tiny_yolo(
        data / "models" / "adetailer" / "face_yolov8n.onnx", yolo_candidates([(320, 320, 200, 200, [0.9])])
    )
    tmp = tmp_path_factory.mktemp("ad")
    with running_server(data, tmp, flags=["--api"], manager=make_manager(tiny_data_dir, tmp)) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _txt2img(c: httpx.Client, **extra: Any) -> tuple[np.ndarray, str]:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    return np.asarray(image.convert("RGB")), json.loads(body["info"])["infotexts"][0]


def _adetailer(*args: Any) -> dict[str, Any]:
    return {"alwayson_scripts": {"ADetailer": {"args": list(args)}}}


def test_an_adetailer_payload_details_only_the_detected_region(c: httpx.Client) -> None:
    plain, plain_info = _txt2img(c)
    detailed, info = _txt2img(c, **_adetailer(True, False, UNIT))
    assert "ADetailer model: face_yolov8n.pt" in info and "ADetailer denoising strength: 0.9" in info, info
    assert "ADetailer" not in plain_info
    changed = np.argwhere((detailed != plain).any(axis=2))
    assert len(changed), "the detail pass changed nothing"
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    x1, y1, x2, y2 = BOX
    assert x1 - DILATE - 1 <= left and right <= x2 + DILATE, (left, right)
    assert y1 - DILATE - 1 <= top and bottom <= y2 + DILATE, (top, bottom)
    again, _ = _txt2img(c)  # the next job is unaffected
    assert np.array_equal(again, plain)


def test_disabled_adetailer_is_bit_equal_to_none(c: httpx.Client) -> None:
    plain, _ = _txt2img(c)
    off, info = _txt2img(c, **_adetailer(False))
    assert np.array_equal(off, plain) and "ADetailer" not in info
    off, _ = _txt2img(c, **_adetailer(False, False, UNIT))
    assert np.array_equal(off, plain)
    none, _ = _txt2img(c, **_adetailer(True, False, {"ad_model": "None"}))
    assert np.array_equal(none, plain)


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (
            [True, False, {**UNIT, "ad_confidence": 1.5}],
            "alwayson_scripts.ADetailer.args[2].ad_confidence",
            "1st unit",
        ),
        ([True, UNIT, {"ad_model": "nope.pt"}], "alwayson_scripts.ADetailer.args[2].ad_model", "2nd unit"),
        ([{**UNIT, "ad_bogus": 1}], "alwayson_scripts.ADetailer.args[0].ad_bogus", "unknown field"),
        ({"ad_model": "face_yolov8n.pt"}, "alwayson_scripts.ADetailer.args", "must be a list"),
    ],
)
def test_bad_adetailer_args_are_a_422_naming_unit_and_field(
    c: httpx.Client, args: Any, field: str, words: str
) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": {"ADetailer": {"args": args}}})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.text, r.text


def test_adetailer_routes(c: httpx.Client) -> None:
    assert c.get("/adetailer/v1/version").json()["version"].startswith("sfumato-detailer")
    models = c.get("/adetailer/v1/ad_model").json()["ad_model"]
    assert "face_yolov8n.onnx" in models and "opencv_face" in models and "face_yolov8n.pt" in models


def test_save_images_before_adetailer_keeps_the_first_pass(srv: Running, c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/options", json={"detailer.save_images_before": True})
    assert r.status_code == 200, r.text
    try:
        folder = srv.config.outputs_dir / "txt2img-images"
        before = set(folder.rglob("*.png")) if folder.exists() else set()
        plain, _ = _txt2img(c)
        detailed, _ = _txt2img(c, save_images=True, **_adetailer(True, False, UNIT))
        new = sorted(set(folder.rglob("*.png")) - before)
        assert len(new) == 2, new
        pictures = {p: np.asarray(Image.open(p).convert("RGB")) for p in new}
        texts = {p: Image.open(p).info.get("parameters", "") for p in new}
        (first,) = [p for p in new if np.array_equal(pictures[p], plain)]
        (second,) = [p for p in new if np.array_equal(pictures[p], detailed)]
        assert "ADetailer model" not in texts[first] and "Seed: 11" in texts[first]
        assert "ADetailer model: face_yolov8n.pt" in texts[second]
    finally:
        c.post("/sdapi/v1/options", json={"detailer.save_images_before": False})


def test_each_image_of_a_batch_is_detailed_only_inside_its_region(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "batch_size": 2})
    plain = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in r.json()["images"]
    ]
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "batch_size": 2, **_adetailer(True, False, UNIT)})
    assert r.status_code == 200, r.text
    body = r.json()
    detailed = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in body["images"]
    ]
    infos = json.loads(body["info"])["infotexts"]
    assert "Seed: 11," in infos[0] and "Seed: 12," in infos[1]
    x1, y1, x2, y2 = BOX
    for before, after in zip(plain, detailed, strict=True):
        outside = np.ones(before.shape[:2], bool)
        outside[y1 - DILATE - 1 : y2 + DILATE + 1, x1 - DILATE - 1 : x2 + DILATE + 1] = False
        assert np.array_equal(before[outside], after[outside]) and not np.array_equal(before, after)


def test_a_detector_file_that_is_not_a_model_keeps_the_first_pass(c: httpx.Client) -> None:
    plain, _ = _txt2img(c)
    r = c.post("/sdapi/v1/txt2img", json={**FAST, **_adetailer(True, False, {"ad_model": "broken.onnx"})})
    assert r.status_code == 200, r.text
    body = r.json()
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    assert np.array_equal(image, plain)
    assert "broken.onnx" in body["info"] and "detailer" in body["info"], body["info"]


def test_img2img_skip_img2img_details_the_init_image_itself(c: httpx.Client) -> None:
    init, _ = _txt2img(c)
    buf = io.BytesIO()
    Image.fromarray(init).save(buf, format="PNG")
    payload = {**FAST, "init_images": [base64.b64encode(buf.getvalue()).decode()], "denoising_strength": 0.6}
    r = c.post("/sdapi/v1/img2img", json={**payload, **_adetailer(True, True, UNIT)})
    assert r.status_code == 200, r.text
    body = r.json()
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    assert "ADetailer model: face_yolov8n.pt" in json.loads(body["info"])["infotexts"][0]
    x1, y1, x2, y2 = BOX
    outside = np.ones(init.shape[:2], bool)
    outside[y1 - DILATE - 1 : y2 + DILATE + 1, x1 - DILATE - 1 : x2 + DILATE + 1] = False
    assert np.array_equal(out[outside], init[outside]) and not np.array_equal(out, init)
