"""The softedge_pidinet, softedge_pidisafe and scribble_pidinet preprocessors: PiDiNet loaded from a tiny
table5_pidinet.pth in the published layout (a checkpoint's `state_dict`, "module." prefixes, 3x3
pixel-difference kernels), each kernel's conversion to a plain convolution checked against the
difference it is defined by, the real layout's size against the published file, maps at the requested
resolution through `run` and /controlnet/detect, a foreign file named in the error, and one read of the
file across two calls through the extension's model cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import ImageDraw

from tests.fixtures_annotators import PIDI_DILATION, PIDI_WIDTH, annotator_modules, write_pidinet
from tests.test_ext_controlnet import b64, drawing
from webui.core.models.cache import ModelCache
from webui.core.types import RequestError
from webui.plugins.ext_models import ExtensionModels

FOLDER = "ControlNet/annotators"
MODULES = ("softedge_pidinet", "softedge_pidisafe", "scribble_pidinet")
# the eight neighbours of a 3x3 kernel in row order (kernel positions 0-3, 5-8), as (row, column) steps
STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
RING = [0, 1, 2, 5, 8, 7, 6, 3]  # the 3x3 border, clockwise from the top left


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (tiny networks: faster than two threads on a shared CPU)."""


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("pidi-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pidi-models")
    write_pidinet(cn, d / FOLDER)
    return d


def patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """(batch, channels, size*size, pixels): each pixel's neighbourhood, zero-padded."""
    b, c = x.shape[:2]
    return F.unfold(x, size, padding=size // 2).view(b, c, size * size, -1)


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 2, 9, 11, generator=gen), torch.randn(3, 2, 3, 3, generator=gen)


def per_pixel(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum over input channels and taps of w (out, in, taps) * p (1, in, taps, pixels)."""
    return torch.einsum("oit,bitp->bop", w, p)


def test_central_difference(cn: SimpleNamespace, sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, w = sample  # y = sum_i w_i (x_i - x_centre)
    p = patches(x, 3)
    want = per_pixel(p - p[:, :, 4:5], w.view(3, 2, 9))
    got = F.conv2d(x, cn.pidinet.vanilla_kernel(w, "cd"), padding=1).flatten(2)
    assert torch.allclose(got, want, atol=1e-5)


def test_angular_difference(cn: SimpleNamespace, sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, w = sample  # y = sum over the ring of w_i (x_i - x_(the next position clockwise)); centre 0
    p = patches(x, 3)
    diff = torch.zeros_like(p)
    for k, pos in enumerate(RING):
        diff[:, :, pos] = p[:, :, pos] - p[:, :, RING[(k + 1) % 8]]
    want = per_pixel(diff, w.view(3, 2, 9))
    got = F.conv2d(x, cn.pidinet.vanilla_kernel(w, "ad"), padding=1).flatten(2)
    assert torch.allclose(got, want, atol=1e-5)


def test_radial_difference(cn: SimpleNamespace, sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, w = sample  # y = sum_k w_(k+1) (x at 2 steps - x at 1 step, along direction k)
    p = patches(x, 5)
    diff = torch.stack(
        [p[:, :, (2 + 2 * r) * 5 + 2 + 2 * c] - p[:, :, (2 + r) * 5 + 2 + c] for r, c in STEPS], dim=2
    )
    want = per_pixel(diff, w.view(3, 2, 9)[:, :, 1:])
    kernel = cn.pidinet.vanilla_kernel(w, "rd")
    assert kernel.shape == (3, 2, 5, 5)
    got = F.conv2d(x, kernel, padding=2).flatten(2)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(cn.pidinet.vanilla_kernel(w, "cv"), w)
    with pytest.raises(ValueError, match="unknown pixel-difference convolution 'xd'"):
        cn.pidinet.vanilla_kernel(w, "xd")


def test_the_real_layout_matches_the_published_file(cn: SimpleNamespace) -> None:
    with torch.device("meta"):
        sd = cn.pidinet.PiDiNet(60, 24).state_dict()
    kinds = cn.pidinet.pdc_layers()
    assert list(kinds.values()) == ["cd", "ad", "rd", "cv"] * 4 and len(sd) == 83
    # in the file every pixel-difference kernel is 3x3; converted, the rd ones are 5x5
    values = sum(v[:, :, :3, :3].numel() if k in kinds else v.numel() for k, v in sd.items())
    assert values == 710_149
    assert abs(values * 4 - 2.87e6) / 2.87e6 < 0.02  # table5_pidinet.pth: 2.87 MB in fp32
    shapes = {
        "init_block.weight": (60, 3, 3, 3), "block1_3.conv1.weight": (60, 1, 3, 3),
        "block1_2.conv1.weight": (60, 1, 5, 5), "block2_1.shortcut.weight": (120, 60, 1, 1),
        "block3_1.conv2.weight": (240, 120, 1, 1), "block4_4.conv2.weight": (240, 240, 1, 1),
        "dilations.3.conv1.weight": (24, 240, 1, 1), "dilations.0.conv2_4.weight": (24, 24, 3, 3),
        "attentions.2.conv1.weight": (4, 24, 1, 1), "attentions.2.conv2.weight": (1, 4, 3, 3),
        "conv_reduces.1.conv.bias": (1,), "classifier.weight": (1, 4, 1, 1),
    }  # fmt: skip
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes


def test_the_published_layout_loads_converted(cn: SimpleNamespace, models_dir: Path) -> None:
    path = models_dir / FOLDER / "table5_pidinet.pth"
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in saved)
    model = cn.pidinet.load_net(path)
    got = model.state_dict()
    assert got.keys() == {k.removeprefix("module.") for k in saved} and not model.training
    for key, pdc in cn.pidinet.pdc_layers().items():
        assert torch.equal(got[key], cn.pidinet.vanilla_kernel(saved[f"module.{key}"], pdc))
    assert torch.equal(got["classifier.weight"], saved["module.classifier.weight"])
    assert model.init_block.out_channels == PIDI_WIDTH
    assert model.conv_reduces[0].conv.in_channels == PIDI_DILATION
    # a file saved after conversion (5x5 rd kernels) loads as it is
    again = cn.pidinet.net_from(got, path).state_dict()
    assert all(torch.equal(again[k], got[k]) for k in got)


def test_softedge_pidinet_is_the_fused_output_of_the_bgr_image(cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((96, 64))
    ImageDraw.Draw(image).rectangle((60, 20, 80, 40), fill=(230, 40, 10))  # colour: BGR is not RGB
    out = cn.preprocess.run("softedge_pidinet", image, 64, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (96, 64)
    a = np.asarray(out)[..., 0]
    assert a.max() > a.min()
    model = cn.pidinet.load_net(models_dir / FOLDER / "table5_pidinet.pth")
    bgr = torch.from_numpy(np.asarray(image)[:, :, ::-1].copy()).float().div(255).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = torch.sigmoid(model(bgr))[0, 0].numpy()
    assert np.array_equal(a, (ref * 255).clip(0, 255).astype(np.uint8))
    rgb = torch.from_numpy(np.asarray(image).copy()).float().div(255).permute(2, 0, 1)[None]
    with torch.no_grad():
        swapped = (torch.sigmoid(model(rgb))[0, 0].numpy() * 255).clip(0, 255).astype(np.uint8)
    assert not np.array_equal(a, swapped)  # the channel order matters: the network reads BGR


@pytest.mark.parametrize("module", MODULES)
def test_every_module_keeps_the_requested_resolution(
    module: str, cn: SimpleNamespace, models_dir: Path
) -> None:
    out = cn.preprocess.run(module, drawing((97, 66)), 66, models_dir=models_dir)
    assert out.size == (97, 66)  # padded to a multiple of 8 for the network, cropped back
    a = np.asarray(out)[..., 0]
    if module == "softedge_pidisafe":
        assert set(np.unique(a)) <= {0, 127, 255}
    if module == "scribble_pidinet":
        assert set(np.unique(a)) <= {0, 255}


def test_safe_and_scribble_finish_the_soft_map(cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((96, 64))
    edge = cn.pidinet.edge_map(
        cn.pidinet.load_net(models_dir / FOLDER / "table5_pidinet.pth"), np.asarray(image)
    )
    maps = {m: np.asarray(cn.preprocess.run(m, image, 64, models_dir=models_dir))[..., 0] for m in MODULES}
    assert np.array_equal(maps["softedge_pidinet"], cn.edge_maps.finish(edge, "soft"))
    assert np.array_equal(maps["softedge_pidisafe"], cn.edge_maps.finish(edge, "safe"))
    assert np.array_equal(maps["scribble_pidinet"], cn.edge_maps.scribble(maps["softedge_pidinet"]))


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"table5_pidinet\.pth in models/ControlNet/annotators"
    ):
        cn.preprocess.run("softedge_pidisafe", drawing(), models_dir=tmp_path)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "table5_pidinet.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"table5_pidinet\.pth: not a PiDiNet"):
        cn.preprocess.run("softedge_pidinet", drawing(), models_dir=tmp_path)
    sd = write_pidinet(cn, folder)  # a PiDiNet without the dilation modules (another table's model)
    torch.save({k: v for k, v in sd.items() if ".dilations." not in k}, folder / "table5_pidinet.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"table5_pidinet\.pth: not the table-5"):
        cn.preprocess.run("scribble_pidinet", drawing(), models_dir=tmp_path)
    del sd["module.block2_1.shortcut.bias"]
    torch.save(sd, folder / "table5_pidinet.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"weights do not fit: missing block2_1"):
        cn.preprocess.run("softedge_pidinet", drawing(), models_dir=tmp_path)


def test_module_list_and_detect(cn: SimpleNamespace, models_dir: Path) -> None:
    listed = cn.routes.module_list()
    assert set(MODULES) <= set(listed["module_list"])
    (res,) = listed["module_detail"]["softedge_pidisafe"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    body = {"controlnet_module": "scribble_pidinet", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    out = cn.routes.detect(body, models_dir)
    got = np.asarray(cn.images.decode_base64_image(out["images"][0]).convert("RGB"))
    want = np.asarray(cn.preprocess.run("scribble_pidinet", drawing((64, 64)), 64, models_dir=models_dir))
    assert got.shape == (64, 64, 3) and np.array_equal(got, want)
    with pytest.raises(RequestError, match="table5_pidinet.pth in models/ControlNet/annotators"):
        cn.routes.detect(body, models_dir / "nowhere")


def test_two_calls_read_the_file_once_through_the_cache(cn: SimpleNamespace, models_dir: Path) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    first, second = (
        np.asarray(cn.preprocess.run(m, drawing((96, 64)), 64, models_dir=models_dir, nets=nets))
        for m in ("softedge_pidinet", "softedge_pidisafe")
    )
    assert models.loads == {f"{FOLDER}/table5_pidinet.pth": 1}
    fresh = np.asarray(cn.preprocess.run("softedge_pidinet", drawing((96, 64)), 64, models_dir=models_dir))
    assert np.array_equal(first, fresh) and not np.array_equal(first, second)
