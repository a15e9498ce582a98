"""Stable Diffusion 1.x: one CLIP ViT-L text encoder, a 4-channel latent UNet, epsilon prediction.

`sd1`, `sd1-inpaint` (a 9-channel UNet: latents, mask, masked-image latents) and `sd1-edit`
(instruct-pix2pix: an 8-channel UNet, latents and the source image's latents). Single files keep the
UNet under `model.diffusion_model.`, the VAE under `first_stage_model.` and CLIP (Hugging Face layout)
under `cond_stage_model.transformer.text_model.`.
"""

from __future__ import annotations

import dataclasses

from webui.core.families.base import Defaults, Family, LatentFormat, TextConditioning, TextEncoder
from webui.core.families.unet import UNET_CALL, ldm_names
from webui.core.models.tokenizer import EOS_TOKEN as EOS
from webui.core.sampling.guidance import CFG

UNET_KEYS = "model.diffusion_model."
TEXT_KEYS = "cond_stage_model.transformer.text_model."

# The SD VAE's latents (SD1 and SD2); preview factors are A1111's "cheap approximation".
LATENT = LatentFormat(
    channels=4,
    downscale=8,
    scaling_factor=0.18215,
    preview_rgb=(
        (0.298, 0.207, 0.208),
        (0.187, 0.286, 0.173),
        (-0.158, 0.189, 0.264),
        (-0.184, -0.271, -0.473),
    ),
    taesd="taesd",
)

SD1 = Family(
    arch="sd1",
    group="sd1",
    group_label="SD1",
    pipeline_class="StableDiffusionPipeline",
    inpaint_pipeline_class="StableDiffusionInpaintPipeline",
    components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    latent=LATENT,
    text=TextConditioning((TextEncoder("text_encoder", "tokenizer", EOS, "clip", TEXT_KEYS),)),
    denoiser=UNET_CALL,
    original_names=ldm_names,
    guidance=CFG,
    when_inpaint=False,
    unet_head_dim=8,
    defaults=Defaults(),
)

SD1_INPAINT = dataclasses.replace(
    SD1, arch="sd1-inpaint", pipeline_class="StableDiffusionInpaintPipeline", when_inpaint=True
)

# timbrooks/instruct-pix2pix: an 8-channel UNet (latents, then the source image's unscaled latents).
# Only ever chosen from the weights (detection names it), never by `families.pick`.
SD1_EDIT = dataclasses.replace(
    SD1,
    arch="sd1-edit",
    group_label="SD1 instruct-pix2pix",
    pipeline_class="StableDiffusionInstructPix2PixPipeline",
    inpaint_pipeline_class=None,
    edit=True,
)

FAMILIES: tuple[Family, ...] = (SD1, SD1_INPAINT, SD1_EDIT)
