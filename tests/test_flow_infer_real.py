"""Real-size SD3.5 Large, SD3 Medium and Flux.1 on the meta device: their original-layout tensors size
back to the official configs (shared/reference/model-families), with the official parameter counts."""

from __future__ import annotations

from typing import Any

import pytest
from accelerate import init_empty_weights

from webui.core.models import flux_layout, sd3_layout
from webui.core.models.flow_infer import sd3_transformer_config

# transformer/config.json of the official diffusers repositories (facts of the releases)
SD35_LARGE = dict(
    attention_head_dim=64,
    caption_projection_dim=2432,
    in_channels=16,
    joint_attention_dim=4096,
    num_attention_heads=38,
    num_layers=38,
    out_channels=16,
    patch_size=2,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
    qk_norm="rms_norm",
    sample_size=128,
)
SD3_MEDIUM = dict(
    attention_head_dim=64,
    caption_projection_dim=1536,
    in_channels=16,
    joint_attention_dim=4096,
    num_attention_heads=24,
    num_layers=24,
    out_channels=16,
    patch_size=2,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
    sample_size=128,
)
FLUX_DEV = dict(
    attention_head_dim=128,
    guidance_embeds=True,
    in_channels=64,
    joint_attention_dim=4096,
    num_attention_heads=24,
    num_layers=19,
    num_single_layers=38,
    patch_size=1,
    pooled_projection_dim=768,
)


def _meta(cls_name: str, config: dict[str, Any]) -> Any:
    import diffusers

    with init_empty_weights():
        return getattr(diffusers, cls_name)(**config)


@pytest.mark.parametrize(("config", "billions"), [(SD35_LARGE, 8.06), (SD3_MEDIUM, 2.03)])
def test_sd3_configs_from_original_shapes(config: dict[str, Any], billions: float) -> None:
    model = _meta("SD3Transformer2DModel", config)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e9, 2) == billions
    shapes = {
        "model.diffusion_model." + k: tuple(v.shape)
        for k, v in sd3_layout.to_original(model.state_dict()).items()
    }
    assert sd3_transformer_config(shapes, "model.diffusion_model.") == config


@pytest.mark.parametrize("guidance", [True, False])
def test_flux_config_from_original_shapes(guidance: bool) -> None:
    config = dict(FLUX_DEV, guidance_embeds=guidance)
    model = _meta("FluxTransformer2DModel", config)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e9, 1) == 11.9
    shapes = {k: tuple(v.shape) for k, v in flux_layout.to_original(model.state_dict()).items()}
    inferred = flux_layout.transformer_config(shapes)
    assert inferred == dict(config, out_channels=64, axes_dims_rope=(16, 56, 56))
