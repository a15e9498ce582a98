"""The softedge_hed, softedge_hedsafe and scribble_hed preprocessors: the HED network loaded strictly from
a tiny fp16 ControlNetHED.pth in the real key layout, the real layout's size against the published file,
maps at the requested resolution through `run` and /controlnet/detect (the soft map checked against
the network's side outputs combined as sd-webui-controlnet combines them), a foreign file named in the
error, and one read of the file across two calls through the extension's model cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.fixtures_annotators import HED_WIDTH, annotator_modules, write_hed
from tests.test_ext_controlnet import b64, drawing
from webui.core.models.cache import ModelCache
from webui.core.types import RequestError
from webui.plugins.ext_models import ExtensionModels

FOLDER = "ControlNet/annotators"
MODULES = ("softedge_hed", "softedge_hedsafe", "scribble_hed")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (tiny networks: faster than two threads on a shared CPU)."""


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("hed-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hed-models")
    write_hed(cn, d / FOLDER)
    return d


def test_the_real_layout_matches_the_published_file(cn: SimpleNamespace) -> None:
    with torch.device("meta"):
        sd = cn.hed.HEDNet(64).state_dict()
    values = sum(t.numel() for t in sd.values())
    assert values == 14_716_168  # VGG-16's 13 convolutions, 5 projections and the 3 offsets
    assert abs(values * 2 - 29.4e6) < 0.05e6  # ControlNetHED.pth: 29.4 MB, stored in fp16
    shapes = {
        "norm": (1, 3, 1, 1), "block1.convs.0.weight": (64, 3, 3, 3),
        "block1.projection.weight": (1, 64, 1, 1), "block2.convs.1.weight": (128, 128, 3, 3),
        "block3.convs.2.weight": (256, 256, 3, 3), "block4.convs.0.weight": (512, 256, 3, 3),
        "block5.convs.2.bias": (512,), "block5.projection.weight": (1, 512, 1, 1),
    }  # fmt: skip
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert len(sd) == 1 + 2 * 13 + 2 * 5


def test_the_fp16_file_loads_strictly(cn: SimpleNamespace, models_dir: Path) -> None:
    path = models_dir / FOLDER / "ControlNetHED.pth"
    sd = torch.load(path, weights_only=True)
    assert {v.dtype for v in sd.values()} == {torch.float16}
    model = cn.hed.load_net(path)
    got = model.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k].float()) for k in sd)
    assert model.block1.convs[0].out_channels == HED_WIDTH and not model.training


def reference_edge(model: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """The side outputs resized with OpenCV (bilinear), averaged, sigmoid: sd-webui-controlnet's steps."""
    h, w = rgb.shape[:2]
    with torch.no_grad():
        sides = model(torch.from_numpy(rgb.copy()).float().permute(2, 0, 1)[None])
    maps = [cv2.resize(s[0, 0].numpy(), (w, h), interpolation=cv2.INTER_LINEAR) for s in sides]
    return 1 / (1 + np.exp(-np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)))


def test_softedge_hed_is_the_combined_side_outputs(cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((96, 64))
    out = cn.preprocess.run("softedge_hed", image, 64, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (96, 64)
    a = np.asarray(out)
    assert np.array_equal(a[..., 0], a[..., 2]) and a.max() > a.min()
    model = cn.hed.load_net(models_dir / FOLDER / "ControlNetHED.pth")
    ref = (reference_edge(model, np.asarray(image)) * 255).clip(0, 255).astype(np.uint8)
    assert np.abs(a[..., 0].astype(int) - ref).max() <= 1


@pytest.mark.parametrize("module", MODULES)
def test_every_module_keeps_the_requested_resolution(
    module: str, cn: SimpleNamespace, models_dir: Path
) -> None:
    out = cn.preprocess.run(module, drawing((97, 66)), 66, models_dir=models_dir)
    assert out.size == (97, 66)  # padded to a multiple of 16 for the network, cropped back
    big = cn.preprocess.run(module, drawing((96, 64)), 128, models_dir=models_dir)
    assert big.size == (192, 128)


def test_safe_and_scribble_finish_the_soft_map(cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((96, 64))
    path = models_dir / FOLDER / "ControlNetHED.pth"
    edge = cn.hed.edge_map(cn.hed.load_net(path), np.asarray(image))
    maps = {m: np.asarray(cn.preprocess.run(m, image, 64, models_dir=models_dir))[..., 0] for m in MODULES}
    assert set(np.unique(maps["softedge_hedsafe"])) <= {0, 127, 255}
    assert np.array_equal(maps["softedge_hedsafe"], cn.edge_maps.finish(edge, "safe"))
    assert set(np.unique(maps["scribble_hed"])) <= {0, 255}
    assert np.array_equal(maps["scribble_hed"], cn.edge_maps.scribble(maps["softedge_hed"]))


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"ControlNetHED\.pth in models/ControlNet/annotators"
    ):
        cn.preprocess.run("softedge_hedsafe", drawing(), models_dir=tmp_path)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "ControlNetHED.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"ControlNetHED\.pth: not a ControlNet HED"):
        cn.preprocess.run("softedge_hed", drawing(), models_dir=tmp_path)
    sd = write_hed(cn, folder)  # the layout, one block short of a convolution
    del sd["block3.convs.2.weight"]
    torch.save(sd, folder / "ControlNetHED.pth")
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"ControlNetHED\.pth: weights do not fit: missing block3"
    ):
        cn.preprocess.run("scribble_hed", drawing(), models_dir=tmp_path)


def test_module_list_and_detect(cn: SimpleNamespace, models_dir: Path) -> None:
    listed = cn.routes.module_list()
    assert set(MODULES) <= set(listed["module_list"])
    assert listed["module_detail"]["softedge_hedsafe"]["model_free"] is False
    (res,) = listed["module_detail"]["scribble_hed"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    body = {"controlnet_module": "softedge_hed", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    out = cn.routes.detect(body, models_dir)
    got = np.asarray(cn.images.decode_base64_image(out["images"][0]).convert("RGB"))
    want = np.asarray(cn.preprocess.run("softedge_hed", drawing((64, 64)), 64, models_dir=models_dir))
    assert got.shape == (64, 64, 3) and np.array_equal(got, want)
    with pytest.raises(RequestError, match="ControlNetHED.pth in models/ControlNet/annotators"):
        cn.routes.detect(body, models_dir / "nowhere")


def test_two_calls_read_the_file_once_through_the_cache(cn: SimpleNamespace, models_dir: Path) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    first, second = (
        np.asarray(cn.preprocess.run(m, drawing((96, 64)), 64, models_dir=models_dir, nets=nets))
        for m in ("softedge_hed", "scribble_hed")
    )
    assert models.loads == {f"{FOLDER}/ControlNetHED.pth": 1}
    fresh = np.asarray(cn.preprocess.run("softedge_hed", drawing((96, 64)), 64, models_dir=models_dir))
    assert np.array_equal(first, fresh) and second.max() > second.min()
