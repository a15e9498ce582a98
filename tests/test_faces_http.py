"""Face restoration over A1111's API against the real server: `restore_faces` on img2img, the Extras
route's `codeformer_visibility` / `codeformer_weight` and `gfpgan_visibility`, `/sdapi/v1/face-restorers`,
and the 422s.

CodeFormer's network is the convolution of test_faces_engine.py, read from models/Codeformer by its
FaceRestorers (spandrel's loader needs a torchvision this machine lacks). GFPGAN is the app's own loader
and architecture on a tiny GFPGAN file (tests/fixtures_faces.py) in models/GFPGAN: nothing stands in."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from tests.fixtures_faces import write_tiny_gfpgan
from tests.test_faces_engine import conv_loader
from tests.test_server_harness import Running, make_manager, running_server
from webui.core.faces import restorers
from webui.core.outputs.infotext import parse_infotext

FAST = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7}


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _open(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def face_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("face-models")
    (models / "Codeformer").mkdir()
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    save_file(conv.state_dict(), str(models / "Codeformer" / "codeformer-v0.1.0.safetensors"))
    return models


@pytest.fixture(scope="module")
def srv(
    tiny_data_dir: Path, face_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("faces-http")
    with running_server(tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp)) as running:
        running.services.engine.faces = restorers.FaceRestorers(
            face_models, loader=conv_loader, problem=lambda: ""
        )
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def test_face_restorers_lists_the_installed_one_with_its_file(c: httpx.Client, face_models: Path) -> None:
    assert c.get("/sdapi/v1/face-restorers").json() == [
        {
            "name": "CodeFormer",
            "cmd_dir": str(face_models / "Codeformer"),
            "model_path": str(face_models / "Codeformer" / "codeformer-v0.1.0.safetensors"),
        }
    ]


def test_img2img_restore_faces_restores_the_face_and_says_so(
    c: httpx.Client, srv: Running, astronaut: Image.Image
) -> None:
    mask = Image.new("L", astronaut.size, 0)
    ImageDraw.Draw(mask).rectangle((440, 440, 500, 500), fill=255)
    body = {
        **FAST,
        "init_images": [_b64(astronaut)],
        "mask": _b64(mask),
        "inpaint_full_res": True,
        "denoising_strength": 0.9,
    }
    plain = c.post("/sdapi/v1/img2img", json=body)
    restored = c.post(
        "/sdapi/v1/img2img",
        json={**body, "restore_faces": True, "override_settings": {"code_former_weight": 0.3}},
    )
    assert plain.status_code == 200 and restored.status_code == 200, restored.text
    info = json.loads(restored.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "CodeFormer"
    assert "Face restoration" not in info["extra_generation_params"]
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "CodeFormer"
    assert json.loads(plain.json()["info"])["restore_faces"] is False
    net = srv.services.engine.faces.net("CodeFormer", "restore_faces")
    expected = restorers.restore(_open(plain.json()["images"][0]), net, weight=0.3)
    assert np.array_equal(
        np.asarray(_open(restored.json()["images"][0]).convert("RGB")), np.asarray(expected)
    )


def test_extras_restores_faces_with_codeformer(c: httpx.Client, srv: Running, astronaut: Image.Image) -> None:
    r = c.post(
        "/sdapi/v1/extra-single-image",
        json={"image": _b64(astronaut), "codeformer_visibility": 0.8, "codeformer_weight": 0.3},
    )
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p>CodeFormer visibility: 0.8, CodeFormer weight: 0.3</p>"
    net = srv.services.engine.faces.net("CodeFormer", "codeformer_visibility")
    expected = restorers.restore(astronaut, net, weight=0.3, visibility=0.8)
    assert np.array_equal(np.asarray(_open(r.json()["image"]).convert("RGB")), np.asarray(expected))


def test_a_restorer_that_is_not_installed_is_a_422_naming_the_field(c: httpx.Client) -> None:
    r = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}},
    )
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "models/GFPGAN" in r.json()["error"]
    r = c.post(
        "/sdapi/v1/extra-single-image", json={"image": _b64(Image.new("RGB", (8, 8))), "gfpgan_visibility": 1}
    )
    assert r.status_code == 422 and r.json()["field"] == "gfpgan_visibility", r.text


def test_without_spandrel_an_installed_file_is_a_422_saying_why(
    c: httpx.Client, srv: Running, face_models: Path
) -> None:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("spandrel imports here")
    engine = srv.services.engine
    injected, engine.faces = engine.faces, restorers.FaceRestorers(face_models)  # spandrel's loader
    try:
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "restore_faces": True})
    finally:
        engine.faces = injected
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "spandrel" in r.json()["error"] and "codeformer-v0.1.0.safetensors" in r.json()["error"]


# -- GFPGAN: the app's own architecture and loader, on a tiny file -------------------------------------------


@contextmanager
def serving(srv: Running, models: Path) -> Iterator[restorers.FaceRestorers]:
    """The server's engine restores faces from `models` with the default loaders while in the block."""
    engine = srv.services.engine
    faces = restorers.FaceRestorers(models)
    injected, engine.faces = engine.faces, faces
    try:
        yield faces
    finally:
        engine.faces = injected


@pytest.fixture(scope="module")
def gfpgan_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("gfpgan-models")
    write_tiny_gfpgan(models / "GFPGAN" / "GFPGANv1.4.pth")
    return models


def test_face_restorers_lists_gfpgan(c: httpx.Client, srv: Running, gfpgan_models: Path) -> None:
    with serving(srv, gfpgan_models):
        listed = c.get("/sdapi/v1/face-restorers").json()
    assert listed == [
        {
            "name": "GFPGAN",
            "cmd_dir": str(gfpgan_models / "GFPGAN"),
            "model_path": str(gfpgan_models / "GFPGAN" / "GFPGANv1.4.pth"),
        }
    ]


def test_img2img_restores_the_face_with_gfpgan(
    c: httpx.Client, srv: Running, gfpgan_models: Path, astronaut: Image.Image
) -> None:
    mask = Image.new("L", astronaut.size, 0)
    ImageDraw.Draw(mask).rectangle((440, 440, 500, 500), fill=255)
    body = {
        **FAST,
        "init_images": [_b64(astronaut)],
        "mask": _b64(mask),
        "inpaint_full_res": True,
        "denoising_strength": 0.9,
    }
    with serving(srv, gfpgan_models) as faces:
        plain = c.post("/sdapi/v1/img2img", json=body)
        restored = c.post(
            "/sdapi/v1/img2img",
            json={**body, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}},
        )
        net = faces.net("GFPGAN", "restore_faces")
    assert plain.status_code == 200 and restored.status_code == 200, restored.text
    info = json.loads(restored.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "GFPGAN"
    before = _open(plain.json()["images"][0])
    after = np.asarray(_open(restored.json()["images"][0]).convert("RGB"))
    assert np.array_equal(after, np.asarray(restorers.restore(before, net)))
    changed = np.any(after != np.asarray(before.convert("RGB")), axis=2)
    assert changed[100:130, 200:250].mean() > 0.9 and not changed[300:, :400].any()


def test_extras_restores_faces_with_gfpgan(
    c: httpx.Client, srv: Running, gfpgan_models: Path, astronaut: Image.Image
) -> None:
    with serving(srv, gfpgan_models) as faces:
        r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(astronaut), "gfpgan_visibility": 0.7})
        net = faces.net("GFPGAN", "gfpgan_visibility")
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p>GFPGAN visibility: 0.7</p>"
    expected = restorers.restore(astronaut, net, visibility=0.7)
    out = np.asarray(_open(r.json()["image"]).convert("RGB"))
    assert np.array_equal(out, np.asarray(expected)) and not np.array_equal(out, np.asarray(astronaut))


def test_a_gfpgan_file_that_is_not_one_is_a_422_at_submit_naming_it(
    c: httpx.Client, srv: Running, tmp_path: Path
) -> None:
    (tmp_path / "GFPGAN").mkdir()
    torch.save({"params_ema": torch.nn.Conv2d(3, 3, 3).state_dict()}, tmp_path / "GFPGAN" / "GFPGANv1.3.pth")
    jobs_before = len(srv.services.queue.list(limit=1000))
    with serving(srv, tmp_path):
        r = c.post(
            "/sdapi/v1/txt2img",
            json={**FAST, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}},
        )
        x = c.post(
            "/sdapi/v1/extra-single-image",
            json={"image": _b64(Image.new("RGB", (8, 8))), "gfpgan_visibility": 1},
        )
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "GFPGANv1.3.pth" in r.json()["error"] and "not a GFPGAN" in r.json()["error"]
    assert x.status_code == 422 and x.json()["field"] == "gfpgan_visibility", x.text
    assert "GFPGANv1.3.pth" in x.json()["error"]
    assert len(srv.services.queue.list(limit=1000)) == jobs_before  # refused, not a failed job


def test_txt2img_with_gfpgan_records_it_in_the_infotext(
    c: httpx.Client, srv: Running, gfpgan_models: Path
) -> None:
    with serving(srv, gfpgan_models):
        r = c.post(
            "/sdapi/v1/txt2img",
            json={**FAST, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}},
        )
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["face_restoration_model"] == "GFPGAN"
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "GFPGAN"
    assert parse_infotext(_open(r.json()["images"][0]).text["parameters"])["Face restoration"] == "GFPGAN"
