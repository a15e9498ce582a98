"""`restore_faces` in generation, through `Engine.run` on the tiny SD1 model: an inpaint of a corner of
the astronaut photo keeps her face, which is then restored before the image is saved, with
"Face restoration: CodeFormer" in its infotext, read back by PNG Info.

The face network is the tiny CodeFormer of tests/fixtures_faces.py (the released codeformer.pth's layout)
in models/Codeformer, loaded by the engine's own FaceRestorers: nothing stands in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.faces import restorers
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.ui.params import from_infotext

BASE: dict[str, Any] = dict(prompt="a red apple", steps=3, seed=5, width=64, height=64, checkpoint="tiny-sd1")


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path, tiny_face_models: Path) -> Engine:
    engine = Engine(
        AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs"), manager
    )
    engine.faces = restorers.FaceRestorers(tiny_face_models)
    return engine


def test_inpaint_with_restore_faces_restores_the_kept_face_and_records_it(
    engine: Engine, astronaut: Image.Image
) -> None:
    init = astronaut
    mask = Image.new("L", init.size, 0)
    ImageDraw.Draw(mask).rectangle((440, 440, 500, 500), fill=255)
    args = dict(BASE, init_images=(init,), mask=mask, inpaint_full_res=True, denoising_strength=0.9)
    plain = engine.run(Img2ImgRequest(**args))
    restored = engine.run(Img2ImgRequest(**args, restore_faces=True, code_former_weight=0.3))
    net = engine.faces.net("CodeFormer", "restore_faces")
    expected = restorers.restore(plain.images[0].image, net, weight=0.3)
    out = np.asarray(restored.images[0].image)
    assert np.array_equal(out, np.asarray(expected))
    assert not np.array_equal(out, np.asarray(plain.images[0].image))
    assert np.array_equal(out[300:, :400], np.asarray(init)[300:, :400])  # far from the face and the mask

    params = parse_infotext(restored.images[0].infotext)
    assert params["Face restoration"] == "CodeFormer" and "Face restoration" not in parse_infotext(
        plain.images[0].infotext
    )
    keys = list(params)
    assert keys.index("Seed") + 1 == keys.index("Face restoration")  # A1111's order
    fields = from_infotext(restored.images[0].infotext)
    assert fields["restore_faces"] is True and fields["face_restoration_model"] == "CodeFormer"
    assert from_infotext(plain.images[0].infotext)["restore_faces"] is False


def test_a_restorer_that_is_not_installed_is_refused_before_any_work(engine: Engine) -> None:
    request = Txt2ImgRequest(**BASE, restore_faces=True, face_restoration_model="RestoreFormer")
    with pytest.raises(RequestError) as e:
        engine.check(request)
    assert e.value.field == "restore_faces" and "RestoreFormer is not installed" in e.value.message
    assert "models/GFPGAN" in e.value.message
    with pytest.raises(RequestError) as e:
        Txt2ImgRequest(**BASE, face_restoration_model="Nope").validate()
    assert e.value.field == "face_restoration_model"
    with pytest.raises(RequestError) as e:
        Txt2ImgRequest(**BASE, code_former_weight=2.0).validate()
    assert e.value.field == "code_former_weight"


def test_a1111_payloads_take_the_face_settings_as_a1111_does() -> None:
    from webui.api.schemas import A1111Txt2Img, to_request

    stored = {"face_restoration": True, "face_restoration_model": "CodeFormer", "code_former_weight": 0.5}
    overrides = {"face_restoration_model": "GFPGAN", "code_former_weight": 0.2}
    r = to_request(A1111Txt2Img(override_settings=overrides), Txt2ImgRequest, stored.get)
    assert (r.restore_faces, r.face_restoration_model, r.code_former_weight) == (True, "GFPGAN", 0.2)
    r = to_request(A1111Txt2Img(restore_faces=False), Txt2ImgRequest, stored.get)  # the payload wins
    assert r.restore_faces is False and r.face_restoration_model == "CodeFormer"
    assert to_request(A1111Txt2Img(), Txt2ImgRequest, {}.get).restore_faces is False
    with pytest.raises(RequestError) as e:
        to_request(A1111Txt2Img(override_settings={"code_former_weight": 3}), Txt2ImgRequest, {}.get)
    assert e.value.field == "code_former_weight"
