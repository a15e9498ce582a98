"""The job codec: every request field survives a trip through JSON and back, images as files."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from webui.core.jobs import codec
from webui.core.jobs.codec import REQUEST_KINDS, kind_of, request_from_json, request_to_json
from webui.core.types import GenerationRequest, RequestError, Txt2ImgRequest


def _trip(request: GenerationRequest, image_dir: Path | None = None) -> GenerationRequest:
    data = request_to_json(request, image_dir=image_dir)
    text = json.dumps(data, allow_nan=False)  # strict JSON: no Infinity/NaN literals
    return request_from_json(kind_of(request), json.loads(text), image_dir=image_dir)


def _non_default(cls: type[GenerationRequest]) -> dict[str, Any]:
    """A value different from the default for every field (so a dropped field cannot go unnoticed)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        if isinstance(default, bool):
            out[f.name] = not default
        elif isinstance(default, int):
            out[f.name] = default + 3
        elif isinstance(default, float):
            out[f.name] = default + 0.25 if math.isfinite(default) else -math.inf
        elif isinstance(default, str):
            out[f.name] = default + "x"
        elif isinstance(default, tuple):
            out[f.name] = ("a", "b")
        elif isinstance(default, dict):
            out[f.name] = {"ext": {"weights": [1, 2.5], "name": "n", "off": None}}
        elif default is None:
            out[f.name] = "named" if "str" in str(f.type) else 0.5
    return out


def test_every_txt2img_field_round_trips() -> None:
    values = _non_default(Txt2ImgRequest)
    assert set(values) == set(Txt2ImgRequest.field_names()), "a field type the test does not cover"
    request = Txt2ImgRequest(**values)
    back = _trip(request)
    assert type(back) is Txt2ImgRequest
    for name in Txt2ImgRequest.field_names():
        assert getattr(back, name) == getattr(request, name), name
        assert type(getattr(back, name)) is type(getattr(request, name)), name


def test_defaults_inf_none_and_tuples_round_trip() -> None:
    request = Txt2ImgRequest(prompt="a", styles=("s1", "s2"), eta=None, checkpoint=None)
    data = request_to_json(request)
    assert data["s_tmax"] == {"$float": "inf"}  # JSON has no infinity
    assert data["styles"] == ["s1", "s2"] and data["eta"] is None
    back = _trip(request)
    assert back == request
    assert back.s_tmax == math.inf and back.styles == ("s1", "s2") and back.eta is None
    nan = request_from_json("txt2img", {"s_noise": {"$float": "nan"}})
    assert math.isnan(nan.s_noise)


def test_missing_fields_take_defaults_and_unknown_ones_are_named() -> None:
    assert request_from_json("txt2img", {"prompt": "cat"}) == Txt2ImgRequest(prompt="cat")
    with pytest.raises(RequestError) as e:
        request_from_json("txt2img", {"prompt": "cat", "tiling": True})
    assert e.value.field == "tiling"
    assert request_from_json("txt2img", {"restore_faces": True}).restore_faces is True
    with pytest.raises(RequestError) as e:
        request_from_json("paint", {})
    assert e.value.field == "kind" and "txt2img" in str(e.value)
    with pytest.raises(RequestError) as e:
        request_from_json("txt2img", {"s_tmax": {"$float": "lots"}})
    assert e.value.field == "s_tmax"


def test_unregistered_request_class_is_refused() -> None:
    @dataclass(frozen=True)
    class Other(GenerationRequest):
        pass

    with pytest.raises(RequestError) as e:
        kind_of(Other())
    assert e.value.field == "kind"


@dataclass(frozen=True)
class _WithImages(GenerationRequest):
    """A request kind with image fields, shaped like img2img's (init_images tuple, optional mask)."""

    init_images: tuple[Any, ...] = field(default=(), compare=False)
    mask: Any = field(default=None, compare=False)


@pytest.fixture
def image_kind(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(REQUEST_KINDS, "with-images", _WithImages)
    return "with-images"


def test_images_are_stored_as_png_files_not_in_the_json(image_kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 16, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (24, 16, 4), dtype=np.uint8), "RGBA")
    mask = Image.fromarray(rng.integers(0, 256, (24, 16), dtype=np.uint8), "L")
    request = _WithImages(prompt="p", init_images=(rgb, rgba), mask=mask)
    data = request_to_json(request, image_dir=tmp_path / "job1")
    text = json.dumps(data)
    assert len(text) < 2000, "image bytes ended up in the JSON"
    names = [d["$image"] for d in data["init_images"]] + [data["mask"]["$image"]]
    assert sorted(p.name for p in (tmp_path / "job1").iterdir()) == sorted(names)
    back = request_from_json(image_kind, json.loads(text), image_dir=tmp_path / "job1")
    assert isinstance(back, _WithImages) and isinstance(back.init_images, tuple)
    for before, after in zip((rgb, rgba, mask), (*back.init_images, back.mask), strict=True):
        assert after.mode == before.mode and np.array_equal(np.asarray(after), np.asarray(before))


def test_stored_image_names_cannot_leave_the_job_folder(image_kind: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    (tmp_path / "job").mkdir()
    for name in ("../secret.png", str(secret), "..", "", "sub/../../secret.png"):
        with pytest.raises(RequestError) as e:
            request_from_json(image_kind, {"mask": {"$image": name}}, image_dir=tmp_path / "job")
        assert e.value.field == "mask"
    with pytest.raises(RequestError) as e:  # no folder given: refuse rather than guess
        request_to_json(_WithImages(mask=Image.new("L", (8, 8))))
    assert e.value.field == "mask"
    with pytest.raises(RequestError) as e:
        request_from_json(image_kind, {"mask": {"$image": "missing.png"}}, image_dir=tmp_path / "job")
    assert e.value.field == "mask" and "missing.png" in str(e.value)


def test_values_json_cannot_hold_are_refused_with_the_field() -> None:
    with pytest.raises(RequestError) as e:
        request_to_json(Txt2ImgRequest(extension_args={"cn": object()}))
    assert e.value.field == "extension_args.cn"
    with pytest.raises(RequestError) as e:
        request_to_json(Txt2ImgRequest(extension_args={1: "x"}))  # type: ignore[dict-item]
    assert e.value.field == "extension_args"


def test_registry_is_plain_data() -> None:
    assert REQUEST_KINDS["txt2img"] is Txt2ImgRequest
    assert codec.kind_of(Txt2ImgRequest()) == "txt2img"
