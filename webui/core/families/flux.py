"""Flux.1: a double/single-stream transformer over 16-channel latents packed 2x2 into 64-channel
tokens, CLIP-L (pooled only) and T5-XXL, flow matching.

`flux-dev` is guidance-distilled: no uncond pass, CFG 1, the "Distilled CFG Scale" (3.5) is a model
input, and the shift grows with the image's size; T5 reads 512 tokens. `flux-schnell` is
timestep-distilled: 4 steps, a fixed shift of 1, no guidance input, 256 T5 tokens. Files are loaded by
`models.flow_loader` (BFL's bare transformer, ComfyUI/Forge all-in-one files, split text encoders).
"""

from __future__ import annotations

import dataclasses

from webui.core.families.base import (
    Defaults,
    Family,
    FlowFiles,
    LatentFormat,
    TextConditioning,
    TextEncoder,
)
from webui.core.families.flow_calls import FLUX_CALL
from webui.core.models import flux_layout
from webui.core.models.tokenizer import EOS_TOKEN as EOS
from webui.core.sampling.guidance import DISTILLED

# Preview factors: a least-squares map of Flux latents to RGB (as ComfyUI's latent_formats.Flux)
LATENT = LatentFormat(
    channels=16,
    downscale=8,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    size_multiple=16,  # 8 x the 2x2 packing
    preview_rgb=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    preview_bias=(-0.0329, -0.0718, -0.0851),
    taesd="taef1",
)

# The official scheduler configs (shared/reference/model-families/flux*/scheduler)
DEV_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SCHNELL_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}

DEV_FILES = FlowFiles(
    label="Flux",
    mark="double_blocks.0.img_attn.qkv.weight",
    arch_mark="guidance_in.in_layer.weight",  # dev takes the distilled guidance as an input
    transformer_class="FluxTransformer2DModel",
    config=flux_layout.transformer_config,
    from_original=flux_layout.from_original,
    fp8_blocks=("transformer_blocks.", "single_transformer_blocks."),
    clip_parts=("clip_l",),
    clip_l_projected=False,  # the pooled vector is CLIP-L's pooled output as it is
    tokens_per_cell=4,
    scheduler=DEV_SCHEDULER,
)

FLUX_DEV = Family(
    arch="flux-dev",
    group="flux",
    group_label="Flux dev",
    pipeline_class="FluxPipeline",
    components=(
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_3",
        "scheduler",
    ),
    latent=LATENT,
    text=TextConditioning(
        (TextEncoder("text_encoder", "tokenizer", EOS, "clip", "text_encoders.clip_l.", pooled=True),),
        t5_length=512,
        clip_in_sequence=False,
    ),
    denoiser=FLUX_CALL,
    original_names=flux_layout.module_rules,
    guidance=DISTILLED,
    prediction_type="flow",
    sampling="flow",
    distilled_guidance=True,
    defaults=Defaults(
        sampler="Euler", schedule="Simple", cfg_scale=1.0, distilled_cfg_scale=3.5, width=1024, height=1024
    ),
    files=DEV_FILES,
)

FLUX_SCHNELL = dataclasses.replace(
    FLUX_DEV,
    arch="flux-schnell",
    group_label="Flux schnell",
    text=dataclasses.replace(FLUX_DEV.text, t5_length=256),
    distilled_guidance=False,
    defaults=Defaults(sampler="Euler", schedule="Simple", steps=4, cfg_scale=1.0, width=1024, height=1024),
    files=dataclasses.replace(DEV_FILES, arch_mark=None, scheduler=SCHNELL_SCHEDULER),
)

FAMILIES: tuple[Family, ...] = (FLUX_DEV, FLUX_SCHNELL)
