"""Shared test setup: offline environment, a guard against stray network traffic, tiny model files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netguard import sitecustomize as netguard
from webui import offline

offline.apply()  # before diffusers/transformers/gradio are imported by any test module


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Loopback only and no remote name lookups, here and in every Python process a test starts."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SFUMATO_TEST_NETGUARD")}
    os.environ.update(netguard.child_env(dict(os.environ)))
    netguard.install()
    yield
    netguard.uninstall()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module's tests (its parity checks sum floats in one order); the
    thread count is put back after them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Single-file tiny checkpoints of every fixture architecture, in an A1111-style data folder.

    Built once per test session: {arch: path}. The data folder is `path.parents[2]`.
    """
    from webui.core.models.tiny import ARCHES, build_tiny, save_single_file

    data = tmp_path_factory.mktemp("a1111")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    out = {}
    for arch in ARCHES:
        out[arch] = save_single_file(build_tiny(arch, seed=0), ckpts / f"tiny-{arch}.safetensors")
    return out


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_files: dict[str, Path]) -> Path:
    return next(iter(tiny_files.values())).parents[2]


FLUX_DEMO = "sfumato-demo-tiny-random-flux-dev.safetensors"  # what `--demo-model flux` writes


@pytest.fixture(scope="session")
def tiny_flux_data_dir(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the tiny SD1 (`tiny-sd1`), the tiny Flux dev all-in-one file `--demo-model flux`
    writes (FLUX_DEMO) and a split tiny Flux schnell (`tiny-flux-schnell-split` in Stable-diffusion/, its
    clip_l and t5xxl_fp16 in text_encoder/, ae in VAE/)."""
    import shutil

    from webui.core.models.demo import write_demo
    from webui.core.models.tiny_flow import build_tiny_flow, split_files

    data = tmp_path_factory.mktemp("flux-data")
    models = data / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_files["sd1"], models / "Stable-diffusion" / "tiny-sd1.safetensors")
    assert write_demo(models, "flux").name == FLUX_DEMO
    split_files(build_tiny_flow("flux-schnell", seed=3), models, "tiny-flux-schnell-split")
    return data


@pytest.fixture(scope="session")
def tiny_controlnet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Tiny ControlNets for the tiny SD1 and SDXL models in every file layout (tests/fixtures_controlnet.py),
    in `<data>/models/ControlNet`: {(arch, layout): path}. The models folder is `path.parents[1]`."""
    from tests.fixtures_controlnet import write_controlnets

    return write_controlnets(tmp_path_factory.mktemp("cn-data") / "models")


@pytest.fixture(scope="session")
def tiny_adapter_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Tiny T2I-Adapters (tests/fixtures_controlnet.py ADAPTER_KINDS) in both layouts, in their own
    `models/ControlNet`: {(kind, layout): path}."""
    from tests.fixtures_controlnet import write_adapters

    return write_adapters(tmp_path_factory.mktemp("t2i-data") / "models" / "ControlNet")


@pytest.fixture(scope="session")
def tiny_face_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny GFPGAN (GFPGAN/GFPGANv1.4.pth) and the tiny CodeFormer
    (Codeformer/codeformer-v0.1.0.pth) of tests/fixtures_faces.py, each the released file's layout.
    Read only: a test that changes files makes its own folder with fixtures_faces.face_models."""
    from tests.fixtures_faces import face_models

    return face_models(tmp_path_factory.mktemp("face-models"), gfpgan=True, codeformer=True)


@pytest.fixture(scope="session")
def astronaut() -> Any:
    """skimage's astronaut photo (512x512 RGB, one frontal face at about x=177, y=66, 95x95) as a PIL
    image; shared: tests must not change it."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())
