"""Face restoration over A1111's API against the real server: `restore_faces` on img2img, the Extras
route's `codeformer_visibility` / `codeformer_weight`, `/sdapi/v1/face-restorers`, and the 422s.

The engine's face network is the convolution of test_faces_engine.py, read from models/Codeformer by
its FaceRestorers (spandrel's loader needs a torchvision this machine lacks)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

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
