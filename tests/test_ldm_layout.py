"""diffusers/transformers -> single-file (LDM) layouts, checked against diffusers' own LDM converter.

A model is mapped to the LDM layout, written as a single file and read back with diffusers'
`from_single_file` (its own LDM -> diffusers conversion): every parameter must come back bit-equal.
Real-size configs are checked on the meta device against the key sets of the real checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import save_file
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from webui.core.models.configs import load_component_config
from webui.core.models.ldm_layout import LayoutError, unet_to_ldm, vae_to_ldm
from webui.core.models.text_layout import (
    TextLayoutError,
    clip_from_ldm,
    clip_to_ldm,
    openclip_from_ldm,
    openclip_to_ldm,
    with_text_model_level,
)
from webui.core.models.tiny import unet_config, vae_config

UNET = "model.diffusion_model."
VAE = "first_stage_model."


def _randomized(module: Any, seed: int) -> Any:
    """`module` with every parameter random (no constant norms that would hide a swapped key)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module.eval()


def _assert_same_weights(source: Any, loaded: Any) -> None:
    want = dict(source.named_parameters())
    got = dict(loaded.named_parameters())
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert not got[name].is_meta, f"{name} left on the meta device"
        assert torch.equal(got[name], tensor), f"{name} differs"


def _unet(**config: Any) -> Any:
    cls: Any = UNet2DConditionModel
    return _randomized(cls(**config), seed=1)


def _vae(**config: Any) -> Any:
    cls: Any = AutoencoderKL
    return _randomized(cls(**config), seed=2)


def _through_diffusers(model: Any, cls: Any, ldm: dict[str, Tensor], prefix: str, tmp: Path, sub: str) -> Any:
    """Write `ldm` with `prefix` as a single file and load it with diffusers' converter."""
    model.save_config(tmp / sub)
    path = tmp / "model.safetensors"
    save_file({prefix + k: v.contiguous() for k, v in ldm.items()}, str(path))
    return cls.from_single_file(str(path), config=str(tmp), subfolder=sub, local_files_only=True)


# ---- UNet -------------------------------------------------------------------------------------------

ODD_UNETS = {
    # attention at the first and last level only, one resnet per level, two transformer layers everywhere
    "lpb1-attn-ends": dict(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        transformer_layers_per_block=2,
        cross_attention_dim=16,
        attention_head_dim=4,
    ),
    # three resnets per level, attention everywhere, linear projections
    "lpb3-all-attn": dict(
        block_out_channels=(32, 64),
        layers_per_block=3,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=[1, 2],
        use_linear_projection=True,
    ),
}


@pytest.mark.parametrize("arch", ["sd1", "sd1-inpaint", "sd2-v", "sdxl"])
def test_tiny_unet_round_trips_through_diffusers(arch: str, tmp_path: Path) -> None:
    unet = _unet(**unet_config(arch))
    loaded = _through_diffusers(
        unet, UNet2DConditionModel, unet_to_ldm(unet.state_dict(), unet.config), UNET, tmp_path, "unet"
    )
    _assert_same_weights(unet, loaded)


@pytest.mark.parametrize("name", sorted(ODD_UNETS))
def test_unusual_unet_round_trips_through_diffusers(name: str, tmp_path: Path) -> None:
    unet = _unet(sample_size=8, norm_num_groups=32, **ODD_UNETS[name])
    loaded = _through_diffusers(
        unet, UNet2DConditionModel, unet_to_ldm(unet.state_dict(), unet.config), UNET, tmp_path, "unet"
    )
    _assert_same_weights(unet, loaded)


def test_tiny_unet_known_names() -> None:
    sd1 = _unet(**unet_config("sd1"))
    ldm = unet_to_ldm(sd1.state_dict(), sd1.config)
    assert ldm["input_blocks.1.1.proj_in.weight"].shape == (32, 32, 1, 1)  # conv projection
    assert ldm["input_blocks.3.0.op.weight"].shape == (32, 32, 3, 3)  # downsampler after 2 resnets
    assert ldm["output_blocks.2.1.conv.weight"].shape == (64, 64, 3, 3)  # upsampler, level without attention
    assert "output_blocks.5.1.proj_out.weight" in ldm
    sdxl = _unet(**unet_config("sdxl"))
    ldm = unet_to_ldm(sdxl.state_dict(), sdxl.config)
    assert ldm["label_emb.0.0.weight"].shape == (sdxl.time_embedding.linear_1.out_features, 88)
    assert ldm["input_blocks.4.1.proj_in.weight"].ndim == 2  # linear projection
    assert "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight" in ldm
    assert "output_blocks.2.2.conv.weight" in ldm  # upsampler after an attention
    assert "input_blocks.1.1.norm.weight" not in ldm  # the first level does not attend


# The shipped configs (their parameter counts are checked against the releases in test_configs.py).
SD15_UNET = load_component_config("sd1", "unet")
SD21_UNET = load_component_config("sd2-v", "unet")
SDXL_UNET = load_component_config("sdxl", "unet")
REAL_UNETS: dict[str, tuple[dict[str, Any], int, dict[str, tuple[int, ...]]]] = {
    # config, number of tensors in the real checkpoint's UNet, known (name, shape) pairs
    "sd15": (
        SD15_UNET,
        686,
        {
            "input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
            "output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
            "output_blocks.8.2.conv.weight": (640, 640, 3, 3),
            "middle_block.1.proj_out.weight": (1280, 1280, 1, 1),
        },
    ),
    "sd21": (
        SD21_UNET,
        686,
        {
            "input_blocks.1.1.proj_in.weight": (320, 320),
            "input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
            "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        },
    ),
    "sdxl": (
        SDXL_UNET,
        1680,
        {
            "label_emb.0.0.weight": (1280, 2816),
            "label_emb.0.2.weight": (1280, 1280),
            "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
            "output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
            "output_blocks.5.2.conv.weight": (640, 640, 3, 3),
            "middle_block.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        },
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_UNETS))
def test_real_size_unet_matches_diffusers_converter(name: str) -> None:
    config, n_keys, known = REAL_UNETS[name]
    with init_empty_weights():
        unet: Any = UNet2DConditionModel(**config)  # type: ignore[no-untyped-call]
    sd = unet.state_dict()
    ldm = unet_to_ldm(sd, unet.config)
    assert len(ldm) == len(sd) == n_keys
    for key, shape in known.items():
        assert tuple(ldm[key].shape) == shape, key
    # diffusers' LDM -> diffusers conversion of our output gives back exactly the model's tensors
    single_file = {UNET + k: v for k, v in ldm.items()}
    back = convert_ldm_unet_checkpoint(single_file, dict(unet.config))  # type: ignore[no-untyped-call]
    assert sorted(back) == sorted(sd)
    assert all(back[k] is sd[k] for k in sd)


def test_unet_errors_are_concise() -> None:
    config = unet_config("sd1")
    with pytest.raises(LayoutError, match="down_block_types"):
        unet_to_ldm({}, dict(config, down_block_types=("SimpleCrossAttnDownBlock2D", "DownBlock2D")))
    with pytest.raises(LayoutError, match="layers_per_block"):
        unet_to_ldm({}, dict(config, layers_per_block=(1, 2)))
    with pytest.raises(LayoutError, match="class_embedding"):
        unet_to_ldm({"class_embedding.linear_1.weight": torch.zeros(1)}, config)


# ---- VAE --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        vae_config("sd1"),
        dict(
            vae_config("sd1"),
            block_out_channels=(32, 64, 64),
            layers_per_block=2,
            **{"down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3},
        ),
    ],
    ids=["tiny", "3-levels-lpb2"],
)
def test_vae_round_trips_through_diffusers(config: dict[str, Any], tmp_path: Path) -> None:
    vae = _vae(**config)
    ldm = vae_to_ldm(vae.state_dict(), vae.config)
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # 1x1 conv in LDM
    assert ldm["decoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)
    top = len(config["block_out_channels"]) - 1
    assert torch.equal(
        ldm[f"decoder.up.{top}.block.0.conv1.weight"], vae.decoder.up_blocks[0].resnets[0].conv1.weight
    )
    loaded = _through_diffusers(vae, AutoencoderKL, ldm, VAE, tmp_path, "vae")
    _assert_same_weights(vae, loaded)


def test_real_size_vae_matches_diffusers_converter() -> None:
    with init_empty_weights():
        vae: Any = AutoencoderKL(  # type: ignore[no-untyped-call]
            block_out_channels=[128, 256, 512, 512],
            layers_per_block=2,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
        )
    sd = vae.state_dict()
    ldm = vae_to_ldm(sd, vae.config)
    assert len(ldm) == 248
    assert ldm["encoder.down.0.block.0.conv1.weight"].shape == (128, 128, 3, 3)
    assert ldm["decoder.up.3.upsample.conv.weight"].shape == (512, 512, 3, 3)
    assert ldm["decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    single_file = {VAE + k: v for k, v in ldm.items()}
    back = convert_ldm_vae_checkpoint(single_file, dict(vae.config))  # type: ignore[no-untyped-call]
    assert sorted(back) == sorted(sd)
    assert all(back[k].shape == sd[k].shape for k in sd)


# ---- text encoders ----------------------------------------------------------------------------------


def _clip_cfg(width: int, layers: int = 3, **extra: Any) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=1000, max_position_embeddings=77, hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=layers, num_attention_heads=1, **extra,
    )  # fmt: skip


SD1_TE = "cond_stage_model.transformer.text_model."
SD2_TE = "cond_stage_model.model."
SDXL_TE2 = "conditioner.embedders.1.model."


def test_clip_round_trip_both_directions() -> None:
    te = _randomized(CLIPTextModel(_clip_cfg(32)), seed=3)
    ldm = clip_to_ldm(te.state_dict(), SD1_TE)
    assert SD1_TE + "embeddings.position_embedding.weight" in ldm  # what diffusers detects SD1 by
    assert SD1_TE + "encoder.layers.2.self_attn.q_proj.weight" in ldm
    fresh = CLIPTextModel(_clip_cfg(32))
    fresh.load_state_dict(
        clip_from_ldm({**ldm, SD1_TE + "embeddings.position_ids": torch.zeros(1, 77)}, SD1_TE)
    )
    _assert_same_weights(te, fresh)
    again = clip_to_ldm(clip_from_ldm(ldm, SD1_TE), SD1_TE)
    assert sorted(again) == sorted(ldm) and all(torch.equal(again[k], ldm[k]) for k in ldm)


def test_openclip_with_projection_round_trip_both_directions() -> None:
    te = _randomized(CLIPTextModelWithProjection(_clip_cfg(48, projection_dim=40)), seed=4)
    ldm = openclip_to_ldm(te.state_dict(), SDXL_TE2)
    assert ldm[SDXL_TE2 + "text_projection"].shape == (48, 40)  # (width, projection): transposed
    assert ldm[SDXL_TE2 + "positional_embedding"].shape == (77, 48)
    assert ldm[SDXL_TE2 + "transformer.resblocks.2.attn.in_proj_weight"].shape == (3 * 48, 48)
    assert ldm[SDXL_TE2 + "transformer.resblocks.2.attn.in_proj_bias"].shape == (3 * 48,)
    q = te.text_model.encoder.layers[1].self_attn.v_proj.weight
    assert torch.equal(ldm[SDXL_TE2 + "transformer.resblocks.1.attn.in_proj_weight"][96:], q)
    assert not any(k.startswith(SDXL_TE2 + "transformer.resblocks.3.") for k in ldm)
    hf = openclip_from_ldm({**ldm, SDXL_TE2 + "logit_scale": torch.ones(())}, SDXL_TE2, num_layers=3)
    assert "text_projection.weight" in hf and "embeddings.token_embedding.weight" in hf  # flat keys
    fresh = CLIPTextModelWithProjection(_clip_cfg(48, projection_dim=40))
    fresh.load_state_dict(with_text_model_level(hf))
    _assert_same_weights(te, fresh)
    again = openclip_to_ldm(hf, SDXL_TE2)
    assert sorted(again) == sorted(ldm) and all(torch.equal(again[k], ldm[k]) for k in ldm)


def test_openclip_sd2_reads_the_penultimate_layers_only() -> None:
    te = _randomized(CLIPTextModel(_clip_cfg(32, hidden_act="gelu")), seed=5)
    extra = _randomized(CLIPTextModel(_clip_cfg(32, layers=1)), seed=6).encoder.layers[0].state_dict()
    ldm = openclip_to_ldm(te.state_dict(), SD2_TE, extra_final_block=extra)
    assert torch.equal(ldm[SD2_TE + "transformer.resblocks.3.ln_1.weight"], extra["layer_norm1.weight"])
    assert not any(k.startswith(SD2_TE + "transformer.resblocks.4.") for k in ldm)
    # a real SD2 file also has a projection; the penultimate-layer model has no use for it
    ldm[SD2_TE + "text_projection"] = torch.randn(32, 32)
    hf = openclip_from_ldm(ldm, SD2_TE, num_layers=3)
    assert "text_projection.weight" not in hf
    assert not any(k.startswith("encoder.layers.3.") for k in hf)
    fresh = CLIPTextModel(_clip_cfg(32, hidden_act="gelu"))
    fresh.load_state_dict(hf)
    _assert_same_weights(te, fresh)
    assert "text_projection.weight" in openclip_from_ldm(ldm, SD2_TE, num_layers=3, with_projection=True)


def test_text_layout_errors() -> None:
    te = CLIPTextModel(_clip_cfg(32))
    ldm = openclip_to_ldm(te.state_dict(), SD2_TE)
    with pytest.raises(TextLayoutError, match="blocks"):
        openclip_from_ldm(ldm, SD2_TE, num_layers=4)
    with pytest.raises(TextLayoutError, match="text_projection"):
        openclip_from_ldm(ldm, SD2_TE, num_layers=3, with_projection=True)
    with pytest.raises(TextLayoutError, match="no text encoder keys"):
        clip_from_ldm(ldm, SD1_TE)
    with pytest.raises(TextLayoutError, match="unknown"):
        openclip_from_ldm({**ldm, SD2_TE + "mystery.weight": torch.zeros(1)}, SD2_TE, num_layers=3)
    with_proj = CLIPTextModelWithProjection(_clip_cfg(32)).state_dict()
    with pytest.raises(TextLayoutError, match="text_projection"):
        clip_to_ldm(with_proj, SD1_TE)
