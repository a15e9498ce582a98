"""Face restorer files loaded by spandrel: a tiny RestoreFormer built with spandrel's own architecture
class, random weights saved as .safetensors in the real key layout, found in models/GFPGAN, detected
by spandrel, run on the astronaut photo. Skipped where spandrel cannot be imported (it needs a
torchvision built for the installed torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.faces import restorers
from webui.core.types import RequestError

spandrel = pytest.importorskip("spandrel", exc_type=ImportError)


def tiny_restoreformer() -> dict[str, torch.Tensor]:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    net = RestoreFormer(
        n_embed=16, embed_dim=8, ch=32, ch_mult=(1,) * 6, num_res_blocks=1, z_channels=8, resolution=512
    )
    return {k: v.contiguous() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("faces-models")
    (root / "GFPGAN").mkdir()
    save_file(tiny_restoreformer(), str(root / "GFPGAN" / "RestoreFormer-tiny.safetensors"))
    return root


def test_spandrel_detects_the_file_and_it_restores_only_the_face(models_dir: Path) -> None:
    from skimage import data

    faces = restorers.FaceRestorers(models_dir)
    assert list(faces.installed()) == ["RestoreFormer"]
    net = faces.net("RestoreFormer", "face_restoration_model")
    src = Image.fromarray(data.astronaut())
    out = np.asarray(restorers.restore(src, net))
    changed = np.any(out != np.asarray(src), axis=2)
    assert changed[100:130, 200:250].mean() > 0.9  # eyes and nose
    assert not changed[300:, :].any() and not changed[:, 400:].any()


def test_a_file_of_another_architecture_is_refused_naming_it(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "GFPGAN").mkdir()
    save_file(tiny_restoreformer(), str(tmp_path / "GFPGAN" / "GFPGANv1.4.safetensors"))
    (tmp_path / "Codeformer").mkdir()
    save_file(tiny_restoreformer(), str(tmp_path / "Codeformer" / "codeformer.safetensors"))
    with pytest.raises(RequestError, match="codeformer.safetensors: not a CodeFormer"):  # built here
        restorers.FaceRestorers(tmp_path).net("CodeFormer", "face_restoration_model")
    with pytest.raises(
        RequestError, match="GFPGANv1.4.safetensors: not a GFPGAN"
    ):  # built here, not by spandrel
        restorers.FaceRestorers(tmp_path).net("GFPGAN", "face_restoration_model")
