"""The mlsd preprocessor: M-LSD loaded strictly from mlsd_large_512_fp32.pth in the real layout, its
size against the published file, line decoding on a hand-made network output whose segments are known
(peak suppression, the value and distance thresholds), maps at the requested resolution through `run`
and /controlnet/detect with its two sliders, a foreign file named in the error, and one read of the file
across two calls through the extension's model cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.fixtures_annotators import annotator_modules, write_mlsd
from tests.test_ext_controlnet import b64, drawing
from webui.core.models.cache import ModelCache
from webui.core.types import RequestError
from webui.plugins.ext_models import ExtensionModels

FOLDER = "ControlNet/annotators"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (small inputs: faster than two threads on a shared CPU)."""


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("mlsd-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mlsd-models")
    write_mlsd(cn, d / FOLDER)
    return d


def test_the_real_layout_matches_the_published_file(cn: SimpleNamespace, models_dir: Path) -> None:
    sd = torch.load(models_dir / FOLDER / "mlsd_large_512_fp32.pth", weights_only=True)
    assert sum(v.numel() for v in sd.values()) == 1_552_681 and len(sd) == 362
    size = sum(v.numel() * v.element_size() for v in sd.values())
    assert abs(size - 6.34e6) / 6.34e6 < 0.03  # mlsd_large_512_fp32.pth: 6.34 MB
    shapes = {
        "backbone.features.0.0.weight": (32, 4, 3, 3),
        "backbone.features.1.conv.0.0.weight": (32, 1, 3, 3),
        "backbone.features.2.conv.0.0.weight": (96, 16, 1, 1),
        "backbone.features.13.conv.2.weight": (96, 576, 1, 1),
        "block15.conv1.0.weight": (64, 96, 1, 1), "block15.conv2.0.weight": (64, 64, 1, 1),
        "block22.conv2.0.weight": (64, 128, 3, 3), "block23.conv3.weight": (16, 64, 1, 1),
    }  # fmt: skip
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    model = cn.mlsd.load_net(models_dir / FOLDER / "mlsd_large_512_fp32.pth")
    assert not model.training and torch.equal(
        model.state_dict()["block23.conv3.bias"], sd["block23.conv3.bias"]
    )


def hand_made_output() -> torch.Tensor:
    """A (1, 9, 16, 16) output: one strong centre at (y 5, x 6) with a horizontal segment 8 half-size px
    long, a weaker neighbour beside it, a faint centre, and a strong centre whose segment is a point."""
    out = torch.zeros(1, 9, 16, 16)
    out[0, 0] = -10.0
    out[0, 0, 5, 6], out[0, 1:5, 5, 6] = 3.0, torch.tensor([-4.0, 0.0, 4.0, 0.0])
    out[0, 0, 5, 7], out[0, 1:5, 5, 7] = 2.5, torch.tensor([-3.0, 1.0, 3.0, 1.0])  # not a 3x3 peak
    out[0, 0, 12, 3], out[0, 1:5, 12, 3] = -3.0, torch.tensor([0.0, -2.0, 0.0, 2.0])  # score 0.047
    out[0, 0, 12, 12], out[0, 1:5, 12, 12] = 3.0, torch.tensor([0.01, 0.0, 0.0, 0.0])  # length 0.01
    return out


def test_decoding_keeps_peaks_above_both_thresholds(cn: SimpleNamespace) -> None:
    out = hand_made_output()
    assert cn.mlsd.segments(out, 0.1, 0.1).tolist() == [[4.0, 10.0, 20.0, 10.0]]  # doubled: input pixels
    low = cn.mlsd.segments(out, 0.01, 0.1).tolist()
    assert sorted(low) == [[4.0, 10.0, 20.0, 10.0], [6.0, 20.0, 6.0, 28.0]]
    assert len(cn.mlsd.segments(out, 0.1, 0.001)) == 2  # the point-like segment passes a tiny distance
    assert len(cn.mlsd.segments(out, 0.1, 10.0)) == 0  # 8 half-size px is not longer than 10
    canvas = cn.mlsd.draw(cn.mlsd.segments(out, 0.1, 0.1), 32, 32)
    assert np.nonzero(canvas)[0].tolist() == [10] * 17 and np.nonzero(canvas)[1].tolist() == list(
        range(4, 21)
    )


def test_mlsd_maps_through_run(cn: SimpleNamespace, models_dir: Path) -> None:
    out = cn.preprocess.run("mlsd", drawing((97, 66)), 66, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (97, 66)
    a = np.asarray(out)[..., 0]
    assert set(np.unique(a)) <= {0, 255}
    model = cn.mlsd.load_net(models_dir / FOLDER / "mlsd_large_512_fp32.pth")
    rgb = np.asarray(drawing((97, 66)))
    assert np.array_equal(a, cn.mlsd.line_map(model, rgb, 0.1, 0.1))  # -1: the sliders' defaults
    assert cn.mlsd.line_map(model, rgb, 0.01, 0.01).sum() >= a.sum()
    none = cn.preprocess.run("mlsd", drawing((97, 66)), 66, 2.0, models_dir=models_dir)
    assert not np.asarray(none).any()  # a score (sigmoid) is never above 2


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"mlsd_large_512_fp32\.pth in models/ControlNet"
    ):
        cn.preprocess.run("mlsd", drawing(), models_dir=tmp_path)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "mlsd_large_512_fp32.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"mlsd_large_512_fp32\.pth: not an M-LSD"):
        cn.preprocess.run("mlsd", drawing(), models_dir=tmp_path)


def test_module_list_and_detect(cn: SimpleNamespace, models_dir: Path) -> None:
    listed = cn.routes.module_list()
    res, value, distance = listed["module_detail"]["mlsd"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    assert (value["name"], value["value"], value["min"], value["max"]) == (
        "MLSD Value Threshold",
        0.1,
        0.01,
        2.0,
    )
    assert (distance["name"], distance["value"], distance["max"]) == ("MLSD Distance Threshold", 0.1, 20.0)
    body = {"controlnet_module": "mlsd", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64, "controlnet_threshold_a": 0.05}  # fmt: skip
    out = cn.routes.detect(body, models_dir)
    got = np.asarray(cn.images.decode_base64_image(out["images"][0]).convert("RGB"))
    want = np.asarray(cn.preprocess.run("mlsd", drawing((64, 64)), 64, 0.05, models_dir=models_dir))
    assert got.shape == (64, 64, 3) and np.array_equal(got, want)
    with pytest.raises(RequestError, match="mlsd_large_512_fp32.pth in models/ControlNet/annotators"):
        cn.routes.detect(body, models_dir / "nowhere")


def test_two_calls_read_the_file_once_through_the_cache(cn: SimpleNamespace, models_dir: Path) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    first, second = (
        np.asarray(cn.preprocess.run("mlsd", drawing((64, 64)), 64, a, models_dir=models_dir, nets=nets))
        for a in (0.1, 0.01)
    )
    assert models.loads == {f"{FOLDER}/mlsd_large_512_fp32.pth": 1}
    fresh = np.asarray(cn.preprocess.run("mlsd", drawing((64, 64)), 64, 0.1, models_dir=models_dir))
    assert np.array_equal(first, fresh) and second.sum() >= first.sum()
