"""The lineart_realistic / lineart_coarse preprocessors: the informative-drawings generator loaded from
models/ControlNet/annotators (sk_model.pth, sk_model2.pth) through the safe loader, with tiny
random-weight files of the real layout written here; their maps through `run`, the module list and
/controlnet/detect, and a clear error naming the file and folder when a file is missing or wrong."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.fixtures_controlnet import extension_modules
from tests.test_ext_controlnet import b64, drawing
from webui.core.models.tiny import _randomize
from webui.core.types import RequestError

WIDTH, BLOCKS = 8, 2  # the real files: 64 and 3


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    mods = extension_modules(tmp_path_factory.mktemp("lineart-ext"))
    mods.lineart = importlib.import_module(f"{mods.models.__package__}.lineart")
    return mods


def write_annotators(cn: SimpleNamespace, models_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """sk_model.pth and sk_model2.pth (different seeds) as plain state-dict pickles, like the real ones."""
    folder = models_dir / "ControlNet" / "annotators"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, name in enumerate(("sk_model.pth", "sk_model2.pth"), start=3):
        model = cn.lineart.Generator(WIDTH, BLOCKS)
        _randomize(model, torch.Generator().manual_seed(seed))
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(sd, folder / name)
        out[name] = sd
    return out


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lineart-models")
    write_annotators(cn, d)
    return d


def test_files_load_in_the_real_layout(cn: SimpleNamespace, models_dir: Path) -> None:
    path = models_dir / "ControlNet" / "annotators" / "sk_model.pth"
    sd = torch.load(path, weights_only=True)
    assert {"model0.1.weight", "model1.0.weight", "model2.0.conv_block.1.weight", "model3.0.weight",
            "model4.1.weight"} <= sd.keys()  # fmt: skip
    model = cn.lineart.load_generator(path)
    got = model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd) and len(model.model2) == BLOCKS
    assert model.model0[1].out_channels == WIDTH and not model.training


@pytest.mark.parametrize("module", ["lineart_realistic", "lineart_coarse"])
def test_maps_are_the_inverted_network_output(module: str, cn: SimpleNamespace, models_dir: Path) -> None:
    image = drawing((96, 64))
    out = cn.preprocess.run(module, image, 64, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (96, 64)
    a = np.asarray(out)
    assert a.dtype == np.uint8 and np.array_equal(a[..., 0], a[..., 2]) and a.max() > a.min()
    model = cn.lineart.load_generator(models_dir / "ControlNet" / "annotators" / cn.lineart.FILES[module])
    x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).float().div(255).permute(2, 0, 1)
    with torch.no_grad():
        ref = model(x[None])[0, 0].numpy()
    assert ref.min() >= 0 and ref.max() <= 1  # the sigmoid's range
    assert np.array_equal(a[..., 0], 255 - (ref * 255).clip(0, 255).astype(np.uint8))


def test_any_size_keeps_its_size(cn: SimpleNamespace, models_dir: Path) -> None:
    out = cn.preprocess.run("lineart_realistic", drawing((97, 66)), 66, models_dir=models_dir)
    assert out.size == (97, 66)  # padded to a multiple of 4 for the network, cropped back


def test_realistic_and_coarse_use_their_own_files(cn: SimpleNamespace, models_dir: Path) -> None:
    a = np.asarray(cn.preprocess.run("lineart_realistic", drawing(), 64, models_dir=models_dir))
    b = np.asarray(cn.preprocess.run("lineart_coarse", drawing(), 64, models_dir=models_dir))
    assert not np.array_equal(a, b)


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"sk_model2\.pth in models/ControlNet/annotators"
    ):
        cn.preprocess.run("lineart_coarse", drawing(), models_dir=tmp_path)
    folder = tmp_path / "ControlNet" / "annotators"
    folder.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "sk_model.pth")
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=r"sk_model\.pth: not an informative-drawings"
    ):
        cn.preprocess.run("lineart_realistic", drawing(), models_dir=tmp_path)

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    with open(folder / "sk_model.pth", "wb") as f:
        pickle.dump({"model0.1.weight": Evil()}, f)
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"sk_model\.pth"):
        cn.preprocess.run("lineart_realistic", drawing(), models_dir=tmp_path)


def test_module_list_and_detect(cn: SimpleNamespace, models_dir: Path) -> None:
    listed = cn.routes.module_list()
    assert {"lineart_realistic", "lineart_coarse"} <= set(listed["module_list"])
    assert listed["module_detail"]["lineart_realistic"]["model_free"] is False
    (res,) = listed["module_detail"]["lineart_coarse"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    body = {"controlnet_module": "lineart_realistic", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    out = cn.routes.detect(body, models_dir)
    got = np.asarray(cn.images.decode_base64_image(out["images"][0]).convert("RGB"))
    want = np.asarray(cn.preprocess.run("lineart_realistic", drawing((64, 64)), 64, models_dir=models_dir))
    assert got.shape == (64, 64, 3) and np.array_equal(got, want)
    with pytest.raises(RequestError, match="sk_model.pth in models/ControlNet/annotators") as err:
        cn.routes.detect(body, models_dir / "nowhere")
    assert err.value.field == "controlnet_module"
