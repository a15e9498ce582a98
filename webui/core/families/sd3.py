"""Stable Diffusion 3 / 3.5: an MMDiT transformer over 16-channel latents (2x2 patches), three text
encoders, flow matching (a fixed shift of 3).

Text: CLIP-L and OpenCLIP bigG penultimate hidden states, concatenated on the feature axis and
zero-padded to T5's width, then T5-XXL's 256 tokens appended on the sequence axis; the pooled vector is
CLIP-L's pooled output (unprojected) followed by bigG's projected one. CFG with an uncond pass.

`sd3` is SD3 Medium (no q/k norms); `sd3.5` SD3.5 Large / Large Turbo / Medium (RMS q/k norms,
MMDiT-X dual attention in Medium). Files are loaded by `models.flow_loader` (shapes, no shipped config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from webui.core.families.base import (
    Defaults,
    Family,
    FlowFiles,
    LatentFormat,
    TextConditioning,
    TextEncoder,
)
from webui.core.families.flow_calls import SD3_CALL
from webui.core.models import sd3_layout
from webui.core.models.tokenizer import EOS_TOKEN as EOS
from webui.core.models.tokenizer import OPENCLIP_PAD_TOKEN as OPENCLIP_PAD
from webui.core.sampling.guidance import CFG

T5_LENGTH = 256

# Preview factors: a least-squares map of SD3 latents to RGB (as ComfyUI's latent_formats.SD3)
LATENT = LatentFormat(
    channels=16,
    downscale=8,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    size_multiple=16,  # 8 x the MMDiT's 2x2 patches
    preview_rgb=(
        (-0.0645, 0.0177, 0.1052),
        (0.0028, 0.0312, 0.0650),
        (0.1848, 0.0762, 0.0360),
        (0.0944, 0.0360, 0.0889),
        (0.0897, 0.0506, -0.0364),
        (-0.0020, 0.1203, 0.0284),
        (0.0855, 0.0118, 0.0283),
        (-0.0539, 0.0658, 0.1047),
        (-0.0057, 0.0116, 0.0700),
        (-0.0412, 0.0281, -0.0039),
        (0.1106, 0.1171, 0.1220),
        (-0.0248, 0.0682, -0.0481),
        (0.0815, 0.0846, 0.1207),
        (-0.0120, -0.0055, -0.0867),
        (-0.0749, -0.0634, -0.0456),
        (-0.1418, -0.1457, -0.1259),
    ),
    preview_bias=(0.2394, 0.2135, 0.1925),
    taesd="taesd3",
)


def _transformer_config(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> dict[str, Any]:
    from webui.core.models.flow_infer import sd3_transformer_config  # models.infer imports families

    return sd3_transformer_config(shapes, prefix)


FILES = FlowFiles(
    label="SD3",
    mark="joint_blocks.0.x_block.attn.qkv.weight",
    arch_mark=None,
    transformer_class="SD3Transformer2DModel",
    config=_transformer_config,
    from_original=sd3_layout.from_original,
    fp8_blocks=("transformer_blocks.",),
    clip_parts=("clip_l", "clip_g"),
    clip_l_projected=True,  # read through an identity projection when the file has none
    tokens_per_cell=1,  # the MMDiT patchifies inside
    scheduler={"num_train_timesteps": 1000, "shift": 3.0},  # the official config (model-families/sd3*)
)

SD3 = Family(
    arch="sd3",
    group="sd3",
    group_label="SD3",
    pipeline_class="StableDiffusion3Pipeline",
    components=(
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
        "scheduler",
    ),
    latent=LATENT,
    text=TextConditioning(
        (
            TextEncoder("text_encoder", "tokenizer", EOS, "clip", "text_encoders.clip_l.", pooled=True),
            TextEncoder(
                "text_encoder_2", "tokenizer_2", OPENCLIP_PAD, "clip", "text_encoders.clip_g.", pooled=True
            ),
        ),
        hidden_layer="penultimate",
        t5_length=T5_LENGTH,
    ),
    denoiser=SD3_CALL,
    original_names=sd3_layout.module_rules,
    guidance=CFG,
    prediction_type="flow",
    sampling="flow",
    defaults=Defaults(sampler="Euler", schedule="Simple", cfg_scale=7.0, width=1024, height=1024),
    files=FILES,
)

SD3_5 = dataclasses.replace(
    SD3,
    arch="sd3.5",
    group_label="SD3.5",
    defaults=Defaults(sampler="Euler", schedule="Simple", cfg_scale=4.5, width=1024, height=1024),
    files=dataclasses.replace(FILES, arch_mark="joint_blocks.0.x_block.attn.ln_q.weight"),  # q/k norms
)

FAMILIES: tuple[Family, ...] = (SD3, SD3_5)
