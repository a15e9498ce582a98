"""The lineart_anime preprocessor: the pix2pix U-Net loaded strictly from a tiny netG.pth in the real key
layout, its map (inverted network output, any size in and out), and clear errors naming the file.
/controlnet/detect with lineart_anime through the real server: test_ext_controlnet_openpose.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.fixtures_annotators import ANIME_WIDTH, annotator_modules, write_annotators
from tests.test_ext_controlnet import drawing

INNER = "model.model.1" + ".model.3" * 6  # the innermost block, seven levels down


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("anime-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("anime-models")
    write_annotators(cn, d)
    return d


def test_netg_loads_strictly_in_the_real_layout(cn: SimpleNamespace, models_dir: Path) -> None:
    path = models_dir / "ControlNet" / "annotators" / "netG.pth"
    sd = torch.load(path, weights_only=True)
    with torch.device("meta"):
        real = cn.lineart_anime.UnetGenerator(64).state_dict()
    assert real.keys() == sd.keys() and len(sd) == 32  # 8 levels x (down conv, up conv) x (weight, bias)
    shapes = {
        "model.model.0.weight": (64, 3, 4, 4), "model.model.3.weight": (128, 1, 4, 4),
        "model.model.1.model.1.weight": (128, 64, 4, 4), "model.model.1.model.5.weight": (256, 64, 4, 4),
        f"{INNER}.model.1.weight": (512, 512, 4, 4), f"{INNER}.model.3.weight": (512, 512, 4, 4),
        "model.model.1.model.3.model.3.model.5.weight": (1024, 256, 4, 4),
    }  # fmt: skip
    assert {k: tuple(real[k].shape) for k in shapes} == shapes
    assert sum(v.numel() for v in real.values()) == 54_405_505  # 218 MB in fp32, as the real file
    model = cn.lineart_anime.load_generator(path)
    got = model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd) and not model.training
    assert model.model.model[0].out_channels == ANIME_WIDTH
    torch.save({f"module.{k}": v for k, v in sd.items()}, path.with_name("wrapped.pth"))
    wrapped = cn.lineart_anime.load_generator(path.with_name("wrapped.pth")).state_dict()
    assert all(torch.equal(wrapped[k], sd[k]) for k in sd)  # a DataParallel save loads the same


def test_the_map_is_the_inverted_network_output(cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((256, 256))  # a multiple of 256: no resizing around the network
    out = cn.preprocess.run("lineart_anime", image, 256, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (256, 256)
    a = np.asarray(out)
    assert np.array_equal(a[..., 0], a[..., 2]) and a.max() > a.min()
    model = cn.lineart_anime.load_generator(models_dir / "ControlNet" / "annotators" / "netG.pth")
    x = torch.from_numpy(np.asarray(image).copy()).float().permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        y = model(x)[0, 0].numpy()
    assert y.min() >= -1 and y.max() <= 1  # the tanh's range
    assert np.array_equal(a[..., 0], 255 - (y * 127.5 + 127.5).clip(0, 255).astype(np.uint8))
    other = cn.preprocess.run("lineart_anime", drawing((97, 66)), 66, models_dir=models_dir)
    assert other.size == (97, 66)  # resized to 256 x 256 for the network, and back


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    err = cn.preprocess.AnnotatorUnavailable
    with pytest.raises(
        err, match=r"lineart_anime preprocessor needs netG\.pth in models/ControlNet/annotators"
    ):
        cn.preprocess.run("lineart_anime", drawing(), models_dir=tmp_path)
    folder = tmp_path / "ControlNet" / "annotators"
    folder.mkdir(parents=True)
    torch.save({"model0.1.weight": torch.zeros(2, 2)}, folder / "netG.pth")  # another annotator's layout
    with pytest.raises(err, match=r"netG\.pth: not an anime line-art \(pix2pix U-Net\) model"):
        cn.preprocess.run("lineart_anime", drawing(), models_dir=tmp_path)
    sd = cn.lineart_anime.UnetGenerator(ANIME_WIDTH).state_dict()
    sd[f"{INNER}.model.1.weight"] = torch.zeros(1, 1, 4, 4)
    torch.save(sd, folder / "netG.pth")
    with pytest.raises(err, match=rf"netG\.pth: weights do not fit: wrong shape {INNER}\.model\.1\.weight"):
        cn.preprocess.run("lineart_anime", drawing(), models_dir=tmp_path)
