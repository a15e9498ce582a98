"""Live previews (issue 17 item 5) by the `show_progress_type` setting: the family's cheap latent -> RGB
factors at latent size (Flux's latents unpacked), TAESD from models/VAE-approx at full size when its
weights are there, the full VAE on request; a bad setting is refused naming its key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FLUX_DEMO
from webui.core import families
from webui.core.config import AppConfig
from webui.core.engine import Engine, JobProgress
from webui.core.settings import Settings
from webui.core.types import RequestError, Txt2ImgRequest

SMALL = dict(
    prompt="a red apple", negative_prompt="", width=64, height=64, steps=2, seed=3, save_images=False
)


@pytest.fixture(scope="module")
def data_dir(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the tiny SD1 and a tiny TAESD (diffusers' AutoencoderTiny, random weights) in
    models/VAE-approx/taesd, as diffusers writes it."""
    from diffusers import AutoencoderTiny

    d = tmp_path_factory.mktemp("previews")
    (d / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_files["sd1"], d / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    torch.manual_seed(0)
    eights, ones = (8, 8, 8, 8), (1, 1, 1, 1)
    tiny: Any = AutoencoderTiny(encoder_block_out_channels=eights, decoder_block_out_channels=eights,
                                num_encoder_blocks=ones, num_decoder_blocks=ones)  # fmt: skip
    tiny.save_pretrained(d / "models" / "VAE-approx" / "taesd")
    return d


def _previews(engine: Engine, request: Txt2ImgRequest) -> tuple[list[Image.Image], Image.Image]:
    seen: list[Image.Image] = []

    def progress(p: JobProgress) -> None:
        if p.preview is not None:
            assert isinstance(p.preview, Image.Image)
            seen.append(p.preview)

    result = engine.run(request, progress=progress, preview_every=1)
    return seen, result.images[0].image


def _engine(data_dir: Path, kind: str | None) -> Engine:
    stored = {"show_progress_type": kind}
    return Engine(AppConfig.for_data_dir(data_dir), settings=stored.get)


def test_cheap_previews_are_latent_sized_and_the_default(data_dir: Path) -> None:
    for kind in ("Approx cheap", None):  # None: the setting's default
        previews, image = _previews(_engine(data_dir, kind), Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
        assert len(previews) == 2 and image.size == (64, 64)
        assert all(p.size == (8, 8) and p.mode == "RGB" for p in previews)


def test_taesd_from_models_vae_approx_makes_full_size_previews(data_dir: Path) -> None:
    engine = _engine(data_dir, "TAESD")
    previews, _ = _previews(engine, Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    assert [p.size for p in previews] == [(64, 64)] * 2
    with engine.manager.acquire("tiny-sd1") as model:
        folder = engine.previews.taesd_folder(model.components)
        assert folder == data_dir / "models" / "VAE-approx" / "taesd"
        taesd = engine.previews._load(model.components)
    calls = [0]
    handle = taesd.decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:  # the loaded TAESD is kept and used for the next job's previews
        again, _ = _previews(engine, Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    finally:
        handle.remove()
    assert calls[0] == 2 and len(again) == 2
    # "Approx NN" (A1111's own network is not supported) takes TAESD when it is there
    nn, _ = _previews(_engine(data_dir, "Approx NN"), Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    assert [p.size for p in nn] == [(64, 64)] * 2


def test_taesd_missing_or_broken_falls_back_to_the_cheap_preview(data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "d"
    shutil.copytree(data_dir / "models" / "Stable-diffusion", other / "models" / "Stable-diffusion")
    previews, _ = _previews(_engine(other, "TAESD"), Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    assert [p.size for p in previews] == [(8, 8)] * 2
    broken = other / "models" / "VAE-approx" / "taesd"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    previews, _ = _previews(_engine(other, "TAESD"), Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    assert [p.size for p in previews] == [(8, 8)] * 2


def test_full_previews_use_the_vae_and_the_last_one_is_the_image(data_dir: Path) -> None:
    previews, image = _previews(_engine(data_dir, "Full"), Txt2ImgRequest(checkpoint="tiny-sd1", **SMALL))
    assert [p.size for p in previews] == [(64, 64)] * 2
    diff = np.abs(np.asarray(previews[-1], np.int16) - np.asarray(image, np.int16))
    assert diff.max() <= 1


def test_flux_cheap_previews_are_unpacked_latent_sized(tiny_flux_data_dir: Path) -> None:
    request = Txt2ImgRequest(checkpoint=Path(FLUX_DEMO).stem, cfg_scale=1.0, sampler_name="Euler", **SMALL)
    previews, _ = _previews(_engine(tiny_flux_data_dir, "Approx cheap"), request)
    assert [p.size for p in previews] == [(8, 8)] * 2  # 16 x 8 x 8 latents, not 64-channel 4 x 4 tokens


@pytest.mark.parametrize("arch", ["sd1", "sdxl", "sd3", "flux-dev"])
def test_the_family_factors_give_a_latent_of_a_colour_that_colour(arch: str) -> None:
    """Latents made from a colour with the factors' least-squares inverse preview as that colour (mean
    colour and its sign per channel): the factors are laid out channel by channel, RGB in -1..1."""
    latent = families.family(arch).latent
    m = torch.tensor(latent.preview_rgb)  # (C, 3)
    bias = torch.tensor(latent.preview_bias or (0.0, 0.0, 0.0))
    for colour in ((0.8, -0.5, -0.6), (-0.7, 0.6, -0.2), (-0.3, -0.4, 0.9)):
        target = torch.tensor(colour)
        z = torch.linalg.pinv(m.T) @ (target - bias)  # (C,)
        field = z[:, None, None].expand(-1, 6, 5) + 0.01 * torch.randn(m.shape[0], 6, 5)
        rgb = latent.preview(field).mean(dim=(1, 2))
        assert torch.equal(torch.sign(rgb), torch.sign(target)), (arch, colour, rgb)
        assert torch.allclose(rgb, target, atol=0.1)
    assert latent.preview(torch.zeros(m.shape[0], 6, 5)).shape == (3, 6, 5)


def test_the_setting_is_checked_naming_its_key(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "config.json")
    assert settings.get("show_progress_type") == "Approx cheap"
    assert settings.updated({"show_progress_type": "TAESD"}).get("show_progress_type") == "TAESD"
    with pytest.raises(RequestError, match="show_progress_type"):
        settings.updated({"show_progress_type": "Pretty"})
