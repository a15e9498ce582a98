"""Stable Diffusion 2.x: one OpenCLIP ViT-H text encoder (its penultimate layer), the SD VAE, a UNet with
64-wide attention heads; `sd2` predicts epsilon (512 px), `sd2-v` v (768 px).

v-prediction cannot be read from weights: a sidecar yaml or a `v_pred` key says it (models/detect.py).
Single files keep OpenCLIP under `cond_stage_model.model.`.
"""

from __future__ import annotations

import dataclasses

from webui.core.families.base import Defaults, Family, TextConditioning, TextEncoder
from webui.core.families.sd1 import LATENT
from webui.core.families.unet import UNET_CALL, ldm_names
from webui.core.models.tokenizer import OPENCLIP_PAD_TOKEN as OPENCLIP_PAD
from webui.core.sampling.guidance import CFG

TEXT_KEYS = "cond_stage_model.model."

SD2 = Family(
    arch="sd2",
    group="sd2",
    group_label="SD2",
    pipeline_class="StableDiffusionPipeline",
    inpaint_pipeline_class="StableDiffusionInpaintPipeline",
    components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    latent=LATENT,
    text=TextConditioning(
        (TextEncoder("text_encoder", "tokenizer", OPENCLIP_PAD, "openclip-penultimate", TEXT_KEYS),)
    ),
    denoiser=UNET_CALL,
    original_names=ldm_names,
    guidance=CFG,
    when_v=False,
    defaults=Defaults(),
)

SD2_V = dataclasses.replace(
    SD2, arch="sd2-v", when_v=True, prediction_type="v_prediction", defaults=Defaults(width=768, height=768)
)

FAMILIES: tuple[Family, ...] = (SD2, SD2_V)
