"""Face restoration over A1111's API against the real server: `restore_faces` on txt2img/img2img, the
Extras route's `codeformer_visibility` / `codeformer_weight` and `gfpgan_visibility`,
`/sdapi/v1/face-restorers`, the 422s, and `save_images_before_face_restoration`.

Nothing stands in: the server's engine reads the tiny CodeFormer and GFPGAN files of
tests/fixtures_faces.py (the released files' layouts, in models/Codeformer and models/GFPGAN) with the
app's own loaders and architectures."""

from __future__ import annotations

import base64
import datetime
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.fixtures_faces import face_models, tiny_gfpgan
from tests.test_server_harness import Running, make_manager, running_server
from webui.core.faces import restorers
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext

FAST = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7}
CODEFORMER = {"face_restoration_model": "CodeFormer"}


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _open(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def srv(
    tiny_data_dir: Path, tiny_face_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("faces-http")
    with running_server(tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp)) as running:
        running.services.engine.faces = restorers.FaceRestorers(tiny_face_models)  # the default loaders
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def test_face_restorers_lists_the_installed_ones_with_their_files(
    c: httpx.Client, tiny_face_models: Path
) -> None:
    assert c.get("/sdapi/v1/face-restorers").json() == [
        {
            "name": "CodeFormer",
            "cmd_dir": str(tiny_face_models / "Codeformer"),
            "model_path": str(tiny_face_models / "Codeformer" / "codeformer-v0.1.0.pth"),
        },
        {
            "name": "GFPGAN",
            "cmd_dir": str(tiny_face_models / "GFPGAN"),
            "model_path": str(tiny_face_models / "GFPGAN" / "GFPGANv1.4.pth"),
        },
    ]


def _inpaint_body(astronaut: Image.Image, **extra: Any) -> dict[str, Any]:
    """img2img that repaints a corner of the astronaut photo and keeps her face."""
    mask = Image.new("L", astronaut.size, 0)
    ImageDraw.Draw(mask).rectangle((440, 440, 500, 500), fill=255)
    return {
        **FAST,
        "init_images": [_b64(astronaut)],
        "mask": _b64(mask),
        "inpaint_full_res": True,
        "denoising_strength": 0.9,
        **extra,
    }


def _changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.any(np.asarray(a.convert("RGB")) != np.asarray(b.convert("RGB")), axis=2)


@pytest.fixture(scope="module")
def plain_inpaint(srv: Running, astronaut: Image.Image) -> Image.Image:
    """The inpaint without face restoration (what every restored variant starts from)."""
    with srv.client() as c:
        r = c.post("/sdapi/v1/img2img", json=_inpaint_body(astronaut))
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["restore_faces"] is False
    return _open(r.json()["images"][0])


def test_img2img_restore_faces_with_codeformer_restores_the_face_and_says_so(
    c: httpx.Client, srv: Running, astronaut: Image.Image, plain_inpaint: Image.Image
) -> None:
    settings = {**CODEFORMER, "code_former_weight": 0.3}
    r = c.post(
        "/sdapi/v1/img2img",
        json=_inpaint_body(astronaut, restore_faces=True, override_settings=settings),
    )
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "CodeFormer"
    assert "Face restoration" not in info["extra_generation_params"]
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "CodeFormer"
    net = srv.services.engine.faces.net("CodeFormer", "restore_faces")
    restored = _open(r.json()["images"][0])
    expected = restorers.restore(plain_inpaint, net, weight=0.3)
    assert np.array_equal(np.asarray(restored.convert("RGB")), np.asarray(expected))
    changed = _changed(restored, plain_inpaint)
    assert changed[100:130, 200:250].mean() > 0.9 and not changed[300:, :400].any()


def test_extras_restores_faces_with_codeformer(c: httpx.Client, srv: Running, astronaut: Image.Image) -> None:
    r = c.post(
        "/sdapi/v1/extra-single-image",
        json={"image": _b64(astronaut), "codeformer_visibility": 0.8, "codeformer_weight": 0.3},
    )
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p>CodeFormer visibility: 0.8, CodeFormer weight: 0.3</p>"
    net = srv.services.engine.faces.net("CodeFormer", "codeformer_visibility")
    expected = restorers.restore(astronaut, net, weight=0.3, visibility=0.8)
    out = _open(r.json()["image"])
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(expected))
    assert _changed(out, astronaut)[100:130, 200:250].mean() > 0.9


@contextmanager
def serving(srv: Running, models: Path, **seams: Any) -> Iterator[restorers.FaceRestorers]:
    """The server's engine restores faces from `models` with the default loaders (or `seams`) while in
    the block."""
    engine = srv.services.engine
    faces = restorers.FaceRestorers(models, **seams)
    injected, engine.faces = engine.faces, faces
    try:
        yield faces
    finally:
        engine.faces = injected


@pytest.mark.parametrize(
    ("problem", "listed"),
    [("spandrel cannot be imported", ["CodeFormer"]), ("", ["CodeFormer", "RestoreFormer"])],
)
def test_face_restorers_lists_restoreformer_only_where_spandrel_runs(
    c: httpx.Client, srv: Running, tmp_path: Path, problem: str, listed: list[str]
) -> None:
    models = face_models(tmp_path, codeformer=True)
    (models / "GFPGAN").mkdir()
    (models / "GFPGAN" / "RestoreFormer.pth").write_bytes(b"x")
    with serving(srv, models, problem=lambda: problem):
        assert [r["name"] for r in c.get("/sdapi/v1/face-restorers").json()] == listed


def test_a_restorer_that_is_not_installed_is_a_422_naming_the_field(
    c: httpx.Client, srv: Running, tmp_path: Path
) -> None:
    r = c.post(
        "/sdapi/v1/txt2img",
        json={
            **FAST,
            "restore_faces": True,
            "override_settings": {"face_restoration_model": "RestoreFormer"},
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "RestoreFormer is not installed" in r.json()["error"] and "models/GFPGAN" in r.json()["error"]
    with serving(srv, tmp_path):  # nothing installed
        r = c.post(
            "/sdapi/v1/extra-single-image",
            json={"image": _b64(Image.new("RGB", (8, 8))), "codeformer_visibility": 1},
        )
    assert r.status_code == 422 and r.json()["field"] == "codeformer_visibility", r.text
    assert "models/Codeformer" in r.json()["error"]


def test_without_spandrel_a_restoreformer_file_is_a_422_saying_why(
    c: httpx.Client, srv: Running, tmp_path: Path
) -> None:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("spandrel imports here")
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / "RestoreFormer.pth").write_bytes(b"x")
    with serving(srv, tmp_path):
        r = c.post(
            "/sdapi/v1/txt2img",
            json={
                **FAST,
                "restore_faces": True,
                "override_settings": {"face_restoration_model": "RestoreFormer"},
            },
        )
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert "spandrel" in r.json()["error"] and "RestoreFormer.pth" in r.json()["error"]


@pytest.mark.parametrize(
    ("kind", "file", "field", "refusal"),
    [
        ("CodeFormer", "Codeformer/codeformer.pth", "codeformer_visibility", "not a CodeFormer"),
        ("GFPGAN", "GFPGAN/GFPGANv1.3.pth", "gfpgan_visibility", "not a GFPGAN"),
    ],
)
def test_a_file_that_is_not_its_kind_is_a_422_at_submit_naming_it(
    c: httpx.Client, srv: Running, tmp_path: Path, kind: str, file: str, field: str, refusal: str
) -> None:
    path = tmp_path / file
    path.parent.mkdir()
    torch.save({"params_ema": torch.nn.Conv2d(3, 3, 3).state_dict()}, path)
    jobs_before = len(srv.services.queue.list(limit=1000))
    with serving(srv, tmp_path):
        r = c.post(
            "/sdapi/v1/txt2img",
            json={**FAST, "restore_faces": True, "override_settings": {"face_restoration_model": kind}},
        )
        x = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(Image.new("RGB", (8, 8))), field: 1})
    assert r.status_code == 422 and r.json()["field"] == "restore_faces", r.text
    assert path.name in r.json()["error"] and refusal in r.json()["error"]
    assert x.status_code == 422 and x.json()["field"] == field, x.text
    assert path.name in x.json()["error"]
    assert len(srv.services.queue.list(limit=1000)) == jobs_before  # refused, not a failed job


def test_a_gfpgan_network_in_the_codeformer_folder_is_refused_naming_it(
    c: httpx.Client, srv: Running, tmp_path: Path
) -> None:
    (tmp_path / "Codeformer").mkdir()
    torch.save({"params_ema": tiny_gfpgan()}, tmp_path / "Codeformer" / "codeformer-v0.1.0.pth")
    with serving(srv, tmp_path):
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "restore_faces": True, "override_settings": CODEFORMER})
    assert r.status_code == 422, r.text
    assert "codeformer-v0.1.0.pth: not a CodeFormer network" in r.json()["error"]


# -- GFPGAN ------------------------------------------------------------------------------------------


def test_img2img_restores_the_face_with_gfpgan(
    c: httpx.Client, srv: Running, astronaut: Image.Image, plain_inpaint: Image.Image
) -> None:
    r = c.post(
        "/sdapi/v1/img2img",
        json=_inpaint_body(
            astronaut, restore_faces=True, override_settings={"face_restoration_model": "GFPGAN"}
        ),
    )
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "GFPGAN"
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == "GFPGAN"
    net = srv.services.engine.faces.net("GFPGAN", "restore_faces")
    after = _open(r.json()["images"][0])
    assert np.array_equal(np.asarray(after.convert("RGB")), np.asarray(restorers.restore(plain_inpaint, net)))
    changed = _changed(after, plain_inpaint)
    assert changed[100:130, 200:250].mean() > 0.9 and not changed[300:, :400].any()


def test_extras_restores_faces_with_gfpgan(c: httpx.Client, srv: Running, astronaut: Image.Image) -> None:
    r = c.post("/sdapi/v1/extra-single-image", json={"image": _b64(astronaut), "gfpgan_visibility": 0.7})
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p>GFPGAN visibility: 0.7</p>"
    net = srv.services.engine.faces.net("GFPGAN", "gfpgan_visibility")
    expected = restorers.restore(astronaut, net, visibility=0.7)
    out = np.asarray(_open(r.json()["image"]).convert("RGB"))
    assert np.array_equal(out, np.asarray(expected)) and not np.array_equal(out, np.asarray(astronaut))


@pytest.mark.parametrize("kind", ["CodeFormer", "GFPGAN"])
def test_txt2img_restore_faces_records_the_restorer_in_the_infotext(c: httpx.Client, kind: str) -> None:
    r = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "restore_faces": True, "override_settings": {"face_restoration_model": kind}},
    )
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["face_restoration_model"] == kind
    assert parse_infotext(info["infotexts"][0])["Face restoration"] == kind
    assert parse_infotext(_open(r.json()["images"][0]).text["parameters"])["Face restoration"] == kind


# -- save_images_before_face_restoration ------------------------------------------------------------


@pytest.fixture
def save_before(c: httpx.Client) -> Iterator[None]:
    r = c.post("/sdapi/v1/options", json={"save_images_before_face_restoration": True})
    assert r.status_code == 200, r.text
    assert c.get("/sdapi/v1/options").json()["save_images_before_face_restoration"] is True
    yield
    assert c.post("/sdapi/v1/options", json={"save_images_before_face_restoration": False}).status_code == 200


def _new_files(srv: Running, kind: str, run: Any) -> list[Path]:
    folder = srv.config.outputs_dir / kind / datetime.date.today().isoformat()
    before = set(folder.glob("*.png"))
    run()
    return sorted(set(folder.glob("*.png")) - before)


def test_with_the_setting_img2img_saves_the_face_before_restoration_too(
    c: httpx.Client, srv: Running, astronaut: Image.Image, plain_inpaint: Image.Image, save_before: None
) -> None:
    body = _inpaint_body(astronaut, restore_faces=True, save_images=True, override_settings=CODEFORMER)
    responses: list[httpx.Response] = []
    new = _new_files(srv, "img2img-images", lambda: responses.append(c.post("/sdapi/v1/img2img", json=body)))
    assert responses[0].status_code == 200, responses[0].text
    assert len(new) == 2, new
    copy, final = new  # A1111's order: the copy first, numbered before the final image
    number = int(copy.name.split("-")[0])
    assert (
        copy.name == f"{number:05}-7-before-face-restoration.png" and final.name == f"{number + 1:05}-7.png"
    )
    with Image.open(copy) as im_copy, Image.open(final) as im_final:
        assert np.array_equal(np.asarray(im_copy.convert("RGB")), np.asarray(plain_inpaint.convert("RGB")))
        changed = _changed(im_copy, im_final)
        assert changed[100:130, 200:250].mean() > 0.9 and not changed[300:, :400].any()
    infotext = read_infotext(final)
    assert infotext and read_infotext(copy) == infotext
    assert parse_infotext(infotext)["Face restoration"] == "CodeFormer"
    unrestored = _new_files(
        srv, "img2img-images", lambda: c.post("/sdapi/v1/img2img", json={**body, "restore_faces": False})
    )
    assert [p.name.endswith("-7.png") for p in unrestored] == [True]  # nothing to copy without restoration


def test_with_the_setting_txt2img_saves_one_copy_per_image(
    c: httpx.Client, srv: Running, save_before: None
) -> None:
    body = {
        **FAST,
        "batch_size": 2,
        "restore_faces": True,
        "save_images": True,
        "override_settings": CODEFORMER,
    }
    new = _new_files(srv, "txt2img-images", lambda: c.post("/sdapi/v1/txt2img", json=body))
    names = [p.name.split("-", 1)[1] for p in new]
    assert names == ["7-before-face-restoration.png", "7.png", "8-before-face-restoration.png", "8.png"], new
    assert read_infotext(new[0]) == read_infotext(new[1]) and read_infotext(new[2]) == read_infotext(new[3])
    assert "Seed: 8" in (read_infotext(new[2]) or "")


def test_without_the_setting_one_file_per_image(
    c: httpx.Client, srv: Running, astronaut: Image.Image
) -> None:
    assert c.get("/sdapi/v1/options").json()["save_images_before_face_restoration"] is False  # the default
    for kind, route, body in (
        ("txt2img-images", "txt2img", {**FAST, "batch_size": 2}),
        ("img2img-images", "img2img", _inpaint_body(astronaut)),
    ):
        payload = {**body, "restore_faces": True, "save_images": True, "override_settings": CODEFORMER}
        new = _new_files(srv, kind, lambda: c.post(f"/sdapi/v1/{route}", json=payload))  # noqa: B023
        assert len(new) == int(body.get("batch_size", 1)), new
        assert not any("before" in p.name for p in new), new
