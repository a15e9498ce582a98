"""Tiled VAE (issue 17 item 3): tiled decode and encode match untiled runs of the tiny VAEs (SD's 4-channel
and Flux's 16-channel, with their scale and shift) within 3/255 away from the picture's borders, `auto`
tiles pictures with a side over 2048 px, and `--tiled-vae` reaches the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny
from webui.core.models.tiny_flow import build_tiny_flow
from webui.core.tasks import vae_tiles
from webui.core.tasks.images import decode
from webui.core.tasks.vae_tiles import VaeTiling, decode_tiled, encode_tiled
from webui.core.types import Txt2ImgRequest
from webui.flags import FlagError, build_parser

SMALL_TILES = VaeTiling("on", tile=24, overlap=16)  # 192 px tiles: a 256 px picture is 2 x 2 tiles
BORDER = 32  # pixels left out at each edge (padding effects of the convolutions)


def _picture(size: int = 256) -> torch.Tensor:
    """A smooth, varied (1, 3, size, size) picture in -1..1."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([torch.sin(6 * x + 2 * y), torch.cos(5 * y), torch.sin(21 * x * y)])[None] * 0.8


def _levels(x: torch.Tensor) -> torch.Tensor:
    """-1..1 pictures as 8-bit levels (as saved), without the border."""
    q = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
    return q[..., BORDER:-BORDER, BORDER:-BORDER]


@pytest.fixture(scope="module")
def sd_vae() -> Any:
    return build_tiny("sd1", seed=0).vae


@pytest.fixture(scope="module")
def flux_vae() -> Any:
    return build_tiny_flow("flux-dev", seed=1).vae


@torch.no_grad()
@pytest.mark.parametrize("which", ["sd_vae", "flux_vae"])
def test_tiled_decode_matches_untiled_within_3_of_255(which: str, request: pytest.FixtureRequest) -> None:
    vae = request.getfixturevalue(which)
    z = vae.encode(_picture()).latent_dist.mode() * vae.config.scaling_factor  # scaled, as the loop's
    plain = decode(vae, z, VaeTiling("off"))
    calls = [0]
    handle = vae.decoder.conv_out.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        tiled = decode(vae, z, SMALL_TILES)
    finally:
        handle.remove()
    assert calls[0] == 4  # 2 x 2 tiles reached the last layer
    assert tiled.shape == plain.shape == (1, 3, 256, 256)
    diff = (_levels(tiled) - _levels(plain)).abs()
    assert diff.max() <= 3, f"max {diff.max()}"
    assert (_levels(plain).std() > 20).item()  # a picture, not a flat field the test would pass on anyway


@torch.no_grad()
def test_tiled_decode_without_the_whole_picture_statistics_would_show(sd_vae: Any) -> None:
    """The group norms' statistics are the reason for the measuring passes: a tile normalised on its own
    differs visibly (so the comparison above can fail)."""
    z = sd_vae.encode(_picture()).latent_dist.mode()
    plain = sd_vae.decode(z).sample
    h = sd_vae.decoder.mid_block(sd_vae.decoder.conv_in(sd_vae.post_quant_conv(z[:, :, :24, :24])))
    alone = sd_vae.decoder.conv_out(
        sd_vae.decoder.conv_act(sd_vae.decoder.conv_norm_out(_up(sd_vae.decoder, h)))
    )
    inner = slice(BORDER, 24 * 8 - BORDER)
    gap = (((alone - plain[..., :192, :192]).clamp(-2, 2) * 127.5)[..., inner, inner]).abs().mean()
    assert gap > 3
    tiled = decode_tiled(sd_vae, z, SMALL_TILES)
    assert (_levels(tiled) - _levels(plain)).abs().max() <= 3


def _up(dec: Any, h: torch.Tensor) -> torch.Tensor:
    for block in dec.up_blocks:
        h = block(h)
    return h


@torch.no_grad()
@pytest.mark.parametrize("which", ["sd_vae", "flux_vae"])
def test_tiled_encode_matches_untiled(which: str, request: pytest.FixtureRequest) -> None:
    vae = request.getfixturevalue(which)
    x = _picture()
    plain = vae.encode(x).latent_dist.mode()
    tiled = encode_tiled(vae, x, SMALL_TILES)
    assert tiled.shape == plain.shape == (1, vae.config.latent_channels, 32, 32)
    inner = (tiled - plain)[..., 4:-4, 4:-4].abs().max()
    assert inner <= 0.01 * plain.abs().max()
    decoded = (_levels(vae.decode(tiled).sample) - _levels(vae.decode(plain).sample)).abs()
    assert decoded.max() <= 3


def test_auto_tiles_over_2048_px_and_the_modes_force_it(sd_vae: Any) -> None:
    auto = VaeTiling()
    assert auto.wanted(sd_vae, 2112, 64)
    assert not auto.wanted(sd_vae, 512, 512)  # a few MB, far below this machine's free memory
    assert VaeTiling("on").wanted(sd_vae, 64, 64)
    assert not VaeTiling("off").wanted(sd_vae, 4096, 4096)
    assert vae_tiles.untiled_bytes(sd_vae, 1024, 1024) == 1024 * 1024 * 32 * 4 * 8
    with pytest.raises(ValueError, match="VAE tiling must be one of auto, on, off"):
        VaeTiling("sometimes")
    with pytest.raises(ValueError, match="overlap"):
        VaeTiling("on", tile=16, overlap=16)


def test_tiled_vae_flag_reaches_the_config(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["--tiled-vae", "on", "--data-dir", str(tmp_path)])
    assert AppConfig.from_flags(ns).tiled_vae == "on"
    assert AppConfig.from_flags(build_parser().parse_args(["--data-dir", str(tmp_path)])).tiled_vae == "auto"
    with pytest.raises(FlagError, match="tiled-vae"):
        build_parser().parse_args(["--tiled-vae", "sometimes"])


def test_a_picture_wider_than_2048_px_is_decoded_in_tiles_like_an_untiled_one(tiny_data_dir: Path) -> None:
    manager = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    manager.refresh()
    request = Txt2ImgRequest(prompt="a long red wall", checkpoint="tiny-sd1", width=2112, height=64, steps=1,
                             seed=5, save_images=False)  # fmt: skip
    images = {}
    calls = [0]
    for mode in ("off", "auto"):
        engine = Engine(AppConfig.for_data_dir(tiny_data_dir, tiled_vae=mode), manager)
        with manager.acquire("tiny-sd1") as model:
            conv_out = model.components.vae.decoder.conv_out
        calls[0] = 0
        handle = conv_out.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        try:
            images[mode] = np.asarray(engine.run(request).images[0].image, dtype=np.int16)
        finally:
            handle.remove()
        assert calls[0] == (1 if mode == "off" else 8), mode  # 264 latent cells: 8 tiles of 64
    assert images["auto"].shape == (64, 2112, 3)
    diff = np.abs(images["auto"] - images["off"])[:, BORDER:-BORDER]
    assert diff.max() <= 3
