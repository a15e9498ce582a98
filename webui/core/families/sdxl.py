"""Stable Diffusion XL: two text encoders (CLIP ViT-L and OpenCLIP bigG, penultimate layers, bigG's
pooled projection), size conditioning (time ids), its own VAE scale; and the SDXL refiner (bigG only,
aesthetic-score time ids), which only refines pictures (img2img).

Single files keep the encoders under `conditioner.embedders.0.transformer.text_model.` (CLIP) and
`conditioner.embedders.1.model.` (OpenCLIP); the refiner's OpenCLIP is `conditioner.embedders.0.model.`.
"""

from __future__ import annotations

from webui.core.families.base import Defaults, Family, LatentFormat, TextConditioning, TextEncoder
from webui.core.families.unet import UNET_CALL, AestheticScoreIds, ldm_names, target_size_ids
from webui.core.models.tokenizer import EOS_TOKEN as EOS
from webui.core.models.tokenizer import OPENCLIP_PAD_TOKEN as OPENCLIP_PAD
from webui.core.sampling.guidance import CFG

CLIP_KEYS = "conditioner.embedders.0.transformer.text_model."
OPENCLIP_KEYS = "conditioner.embedders.1.model."
REFINER_KEYS = "conditioner.embedders.0.model."

LATENT = LatentFormat(
    channels=4,
    downscale=8,
    scaling_factor=0.13025,
    preview_rgb=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    preview_bias=(0.1084, -0.0175, -0.0011),
    taesd="taesdxl",
)
_BIG_G = TextEncoder("text_encoder_2", "tokenizer_2", OPENCLIP_PAD, "openclip", OPENCLIP_KEYS, pooled=True)
_XL_SIZE = Defaults(width=1024, height=1024)

SDXL = Family(
    arch="sdxl",
    group="sdxl",
    group_label="SDXL",
    pipeline_class="StableDiffusionXLPipeline",
    inpaint_pipeline_class="StableDiffusionXLInpaintPipeline",
    components=("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    latent=LATENT,
    text=TextConditioning(
        (TextEncoder("text_encoder", "tokenizer", EOS, "clip", CLIP_KEYS), _BIG_G), hidden_layer="penultimate"
    ),
    denoiser=UNET_CALL,
    original_names=ldm_names,
    guidance=CFG,
    size_conditioning=target_size_ids,
    time_id_count=6,
    defaults=_XL_SIZE,
)

SDXL_REFINER = Family(
    arch="sdxl-refiner",
    group="sdxl-refiner",
    group_label="SDXL refiner",
    pipeline_class="StableDiffusionXLImg2ImgPipeline",
    components=("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"),
    latent=LATENT,
    text=TextConditioning(
        (TextEncoder("text_encoder_2", "tokenizer_2", OPENCLIP_PAD, "openclip", REFINER_KEYS, pooled=True),),
        hidden_layer="penultimate",
    ),
    denoiser=UNET_CALL,
    original_names=ldm_names,
    guidance=CFG,
    size_conditioning=AestheticScoreIds(),
    time_id_count=5,
    defaults=_XL_SIZE,
    tasks=("img2img", "inpaint"),
)

FAMILIES: tuple[Family, ...] = (SDXL, SDXL_REFINER)
