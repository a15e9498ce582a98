"""The detailer extension's parts that need no sampling: detectors, YOLO decoding, masks, units, infotext."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_detailer import (
    ASTRONAUT_FACE,
    astronaut,
    extension_modules,
    save_tiny_yolo,
    white,
    yolo_candidates,
)
from webui.core.outputs.infotext import format_infotext, parse_infotext
from webui.core.types import RequestError


@pytest.fixture(scope="module")
def ad(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return extension_modules(tmp_path_factory.mktemp("ad-ext"))


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/adetailer with a tiny YOLOv8-shaped export: two classes, candidates in 640x640 input pixels."""
    folder = tmp_path_factory.mktemp("models") / "adetailer"
    rows = [
        (320, 320, 100, 60, [0.9, 0.0]),  # the face
        (322, 321, 100, 60, [0.85, 0.0]),  # a near duplicate: suppressed
        (100, 100, 40, 40, [0.2, 0.0]),  # below the threshold
        (320, 320, 100, 60, [0.0, 0.8]),  # same place, other class: kept (NMS is per class)
        (560, 200, 40, 40, [0.5, 0.0]),  # another face, in the letterbox's image area
    ]
    save_tiny_yolo(folder / "face_yolov8n.onnx", yolo_candidates(rows))
    return folder


# ---- detectors --------------------------------------------------------------------------------------


def test_bundled_face_detector_finds_the_astronaut_face(ad: SimpleNamespace) -> None:
    found = ad.detectors.find_detector("opencv_face").detect(astronaut(), 0.3)
    assert len(found) == 1, found
    assert all(abs(a - b) <= 20 for a, b in zip(found[0].box, ASTRONAUT_FACE, strict=True)), found[0].box
    assert found[0].label == "face" and 0.3 <= found[0].confidence < 1


def test_confidence_threshold_and_empty_picture(ad: SimpleNamespace) -> None:
    face = ad.detectors.find_detector("opencv_face")
    conf = face.detect(astronaut(), 0.0)[0].confidence
    assert face.detect(astronaut(), conf + 1e-6) == []
    assert face.detect(Image.new("RGB", (256, 256), (90, 90, 90)), 0.0) == []


def test_mirrored_cascade_merges_both_sides_into_one_detection(ad: SimpleNamespace) -> None:
    both = dataclasses.replace(ad.detectors.BUILTIN["opencv_face"], mirrored=True)
    found = both.detect(astronaut(), 0.3)
    assert len(found) == 1  # the face seen both ways is one detection after NMS
    assert all(abs(a - b) <= 20 for a, b in zip(found[0].box, ASTRONAUT_FACE, strict=True)), found[0].box
    assert ad.detectors.BUILTIN["opencv_face_profile"].mirrored


def test_finder_loads_each_model_once(ad: SimpleNamespace, yolo_dir: Path) -> None:
    find = ad.detectors.finder([yolo_dir])
    assert find("face_yolov8n.pt") is find("face_yolov8n.pt")
    assert find("opencv_face") is ad.detectors.BUILTIN["opencv_face"]


def test_every_builtin_cascade_loads(ad: SimpleNamespace) -> None:
    for name in ad.detectors.BUILTIN:
        assert isinstance(ad.detectors.find_detector(name).detect(white((64, 64)), 0.5), list)


def test_yolo_decode_letterbox_threshold_and_nms(ad: SimpleNamespace, yolo_dir: Path) -> None:
    det = ad.detectors.find_detector("face_yolov8n.onnx", [yolo_dir])
    found = det.detect(white((1280, 640)), 0.3)  # scale 0.5, image rows 160..480 of the input
    assert [(d.box, round(d.confidence, 2), d.label) for d in found] == [
        ((540, 260, 740, 380), 0.9, "face_yolov8n:0"),
        ((540, 260, 740, 380), 0.8, "face_yolov8n:1"),
        ((1080, 40, 1160, 120), 0.5, "face_yolov8n:0"),
    ]
    assert det.detect(Image.new("RGB", (640, 640)), 0.3) == []  # the scores follow the image


def test_letterbox_is_centred_and_grey(ad: SimpleNamespace) -> None:
    blob, placed = ad.yolo.letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    assert blob.shape == (1, 3, 64, 64) and (placed.scale, placed.pad_x, placed.pad_y) == (0.32, 0, 16)
    assert blob[0, 0, 0, 0] == pytest.approx(114 / 255) and blob[0, 0, 32, 32] == 0
    back = placed.to_image(np.array([[0.0, 16.0, 64.0, 48.0]]), 200, 100)
    assert back.tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_segmentation_output_uses_the_class_rows_only(ad: SimpleNamespace) -> None:
    out = np.zeros((1, 4 + 1 + 32, 2), np.float32)
    out[0, :5, 0] = [50, 50, 20, 20, 0.9]
    out[0, 5:, :] = 5.0  # mask coefficients: not scores
    boxes, conf, classes = ad.yolo.decode(out, confidence=0.3, iou=0.7, segmentation=True)
    assert boxes.tolist() == [[40, 40, 60, 60]] and classes.tolist() == [0]
    with pytest.raises(ValueError, match="not a YOLOv8"):
        ad.yolo.decode(np.zeros((1, 4, 3), np.float32), confidence=0.3, iou=0.7)


def test_a_ptmodel_name_finds_its_onnx_export(ad: SimpleNamespace, yolo_dir: Path) -> None:
    det = ad.detectors.find_detector("face_yolov8n.pt", [yolo_dir])
    assert det.path == yolo_dir / "face_yolov8n.onnx"
    assert ad.detectors.detector_names([yolo_dir])[-1] == "face_yolov8n.onnx"


def test_bad_detector_files_get_clear_messages(ad: SimpleNamespace, tmp_path: Path) -> None:
    (tmp_path / "notes.onnx").write_bytes(b"this is not a model")
    with pytest.raises(ad.detectors.DetectorError, match=r"notes\.onnx is not an ONNX model"):
        ad.detectors.find_detector("notes.onnx", [tmp_path]).detect(white((64, 64)), 0.3)
    (tmp_path / "hand_yolov8n.pt").write_bytes(b"\x80\x02pickle")
    with pytest.raises(ad.detectors.DetectorError, match=r"ultralytics pickle.*hand_yolov8n\.onnx"):
        ad.detectors.find_detector("hand_yolov8n.pt", [tmp_path])
    with pytest.raises(ad.detectors.DetectorError, match=r"unknown detection model 'nope'.*opencv_face"):
        ad.detectors.find_detector("nope", [tmp_path])


# ---- masks ------------------------------------------------------------------------------------------


def _det(ad: SimpleNamespace, box: tuple[int, int, int, int], conf: float = 0.9) -> object:
    return ad.detectors.Detection(box, conf, "face")


def test_mask_per_detection_dilated_and_eroded(ad: SimpleNamespace) -> None:
    dets = [_det(ad, (10, 10, 20, 20)), _det(ad, (40, 40, 50, 60))]
    grown = ad.masks.region_masks(dets, (64, 64), dilate=5)
    assert len(grown) == 2 and all(m.mode == "L" for m in grown)
    ys, xs = np.nonzero(np.asarray(grown[0]))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (8, 21, 8, 21)  # 5x5 square kernel
    shrunk = ad.masks.region_masks(dets, (64, 64), dilate=-4)
    ys, xs = np.nonzero(np.asarray(shrunk[0]))
    assert (xs.min(), xs.max()) == (12, 18)
    assert ad.masks.region_masks(dets, (64, 64), dilate=-30) == []  # eroded away: dropped


def test_mask_filters_offsets_and_merge(ad: SimpleNamespace) -> None:
    small, big, mid = _det(ad, (0, 0, 4, 4)), _det(ad, (10, 10, 42, 42)), _det(ad, (50, 50, 60, 60))
    size = (64, 64)
    kept = ad.masks.region_masks([small, big, mid], size, min_ratio=0.01, dilate=0)
    assert len(kept) == 2  # 16 / 4096 < 1 %
    top = ad.masks.region_masks([small, big, mid], size, k_largest_n=1, dilate=0)
    assert np.asarray(top[0])[20, 20] == 255 and np.asarray(top[0]).sum() == 32 * 32 * 255
    assert ad.masks.region_masks([small, big], size, max_ratio=0.1, dilate=0)[0].getbbox() == (0, 0, 4, 4)
    moved = ad.masks.region_masks([mid], size, x_offset=5, y_offset=3, dilate=0)[0]
    assert moved.getbbox() == (55, 47, 64, 57)  # right 5, up 3; clipped at the edge, no wrap
    merged = ad.masks.region_masks([small, mid], size, dilate=0, mode=ad.masks.MergeInvert.MERGE)
    assert len(merged) == 1 and merged[0].getbbox() == (0, 0, 60, 60)
    inv = ad.masks.region_masks([small], size, dilate=0, mode=ad.masks.MergeInvert.MERGE_INVERT)
    assert np.asarray(inv[0])[0, 0] == 0 and np.asarray(inv[0])[63, 63] == 255


# ---- units ------------------------------------------------------------------------------------------


def test_args_forms(ad: SimpleNamespace) -> None:
    full = ad.units.parse_args([True, False, {"ad_model": "opencv_face", "ad_confidence": 0.5}, {}])
    assert full.enabled and not full.skip_img2img and len(full.units) == 2
    assert [u.model for u in full.active_units] == ["opencv_face"]  # the 2nd is "None"
    assert full.units[0].confidence == 0.5 and full.units[0].denoising_strength == 0.4
    short = ad.units.parse_args([{"ad_model": "opencv_face", "is_api": True}])
    assert short.enabled and short.units[0].dilate_erode == 4 and short.units[0].inpaint_only_masked
    off = ad.units.parse_args([False, {"ad_model": "opencv_face"}])
    assert off.active_units == ()
    skip = ad.units.parse_args([True, True, {"ad_model": "opencv_face", "ad_tap_enable": False}])
    assert skip.skip_img2img and skip.active_units == ()


@pytest.mark.parametrize(
    ("args", "field", "text"),
    [
        ([True, False, {"ad_confidence": 1.5}], "ADetailer.args[2].ad_confidence", "between 0 and 1"),
        ([{}, {"ad_denoising_strength": "x"}], "ADetailer.args[1].ad_denoising_strength", "2nd unit"),
        ([{"ad_bogus": 1}], "ADetailer.args[0].ad_bogus", "unknown field"),
        ([{"ad_mask_merge_invert": "Both"}], "ADetailer.args[0].ad_mask_merge_invert", "Merge and Invert"),
        ([{"ad_inpaint_width": 500}], "ADetailer.args[0].ad_inpaint_width", "multiple of 8"),
        ([{"ad_steps": 2.5}], "ADetailer.args[0].ad_steps", "whole number"),
        ([{"ad_use_sampler": True, "ad_sampler": "Nope"}], "ADetailer.args[0].ad_sampler", "unknown sampler"),
        (
            [{"ad_mask_min_ratio": 0.5, "ad_mask_max_ratio": 0.2}],
            "ADetailer.args[0].ad_mask_min_ratio",
            "above",
        ),
        ([{"ad_restore_face": True}], "ADetailer.args[0].ad_restore_face", "not available"),
        ([{"ad_model": "x.pt"}], "ADetailer.args[0].ad_model", "unknown detection model"),
        ([True, "x", {}], "ADetailer.args[1]", "unit objects"),
        ([True, False], "ADetailer.args", "no unit"),
        ({"ad_model": "a"}, "ADetailer.args", "must be a list"),
    ],
)
def test_bad_args_name_the_unit_and_field(ad: SimpleNamespace, args: object, field: str, text: str) -> None:
    with pytest.raises(RequestError) as e:
        ad.units.parse_args(args, models=["opencv_face"])
    assert e.value.field == field and text in str(e.value)


# ---- infotext ---------------------------------------------------------------------------------------


def test_infotext_keys_and_round_trip(ad: SimpleNamespace) -> None:
    args = ad.units.parse_args(
        [
            True,
            False,
            {"ad_model": "face_yolov8n.pt", "ad_prompt": "a smiling face, detailed", "ad_confidence": 0.35},
            {"ad_model": "None"},
            {
                "ad_model": "opencv_fullbody",
                "ad_inpaint_only_masked": False,
                "ad_use_steps": True,
                "ad_steps": 12,
                "ad_x_offset": -3,
                "ad_mask_merge_invert": "Merge",
            },
        ]
    )
    params = ad.infotext.infotext_params(args)
    assert params["ADetailer model"] == "face_yolov8n.pt"
    assert params["ADetailer confidence"] == 0.35 and params["ADetailer dilate erode"] == 4
    assert params["ADetailer mask blur"] == 4 and params["ADetailer denoising strength"] == 0.4
    assert params["ADetailer inpaint only masked"] is True and params["ADetailer inpaint padding"] == 32
    assert params["ADetailer model 3rd"] == "opencv_fullbody" and params["ADetailer steps 3rd"] == 12
    assert "ADetailer inpaint padding 3rd" not in params and "ADetailer steps" not in params
    assert "ADetailer model 2nd" not in params and "ADetailer x offset" not in params
    assert params["ADetailer version"] == ad.infotext.VERSION
    text = format_infotext("a photo", "", params)
    assert "ADetailer mask merge invert 3rd: Merge" in text
    back = ad.infotext.args_from_params(parse_infotext(text))
    again = ad.units.parse_args(back)
    assert again.units[0] == args.units[0] and again.units[2] == args.units[2]
    assert again.units[1].model == "None"
    assert ad.infotext.args_from_params(parse_infotext("a photo\nSteps: 20, Seed: 1")) is None


def test_nothing_written_when_no_unit_is_active(ad: SimpleNamespace) -> None:
    assert ad.infotext.infotext_params(ad.units.parse_args([False, {"ad_model": "opencv_face"}])) == {}


def test_reads_adetailer_infotext_written_elsewhere(ad: SimpleNamespace) -> None:
    text = (
        "1girl\nSteps: 20, Seed: 1, ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3, "
        "ADetailer dilate erode: 4, ADetailer mask blur: 4, ADetailer denoising strength: 0.4, "
        "ADetailer inpaint only masked: True, ADetailer inpaint padding: 32, "
        'ADetailer model 2nd: hand_yolov8n.pt, ADetailer prompt 2nd: "good hands, detailed", '
        "ADetailer confidence 2nd: 0.5, ADetailer inpaint only masked 2nd: True, "
        "ADetailer future key: 1, ADetailer version: 24.11.1"
    )
    units = ad.units.parse_args(ad.infotext.args_from_params(parse_infotext(text))).units
    assert [u.model for u in units] == ["face_yolov8n.pt", "hand_yolov8n.pt"]
    assert units[1].prompt == "good hands, detailed" and units[1].confidence == 0.5
