"""Write the shipped diffusers-format config folders, one per architecture, next to this script.

Usage::

    python webui/assets/configs/generate.py           # (re)write every <arch>/ folder
    python webui/assets/configs/generate.py --check   # exit 1 if a shipped file differs

The values below are those of the official releases (runwayml/stable-diffusion-v1-5 and -inpainting,
timbrooks/instruct-pix2pix, stabilityai/stable-diffusion-2-1-base and -2-1,
stabilityai/stable-diffusion-xl-base-1.0 and -refiner-1.0). Every component file is written by its
own library: the config classes of the pinned diffusers/transformers (see requirements.txt) are
instantiated (models on the meta device) and asked for their JSON, so defaults the releases left
implicit are spelled out as those versions read them.
Deliberate departures from the released files are listed in README.md.

Tokenizers are not written here: model_index.json names them, and they are built from
webui/assets/clip_tokenizer by webui.core.models.tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Json = dict[str, Any]

# ---- schedulers ------------------------------------------------------------------------------------

_BETAS: Json = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
)
_SD_SCHEDULER: Json = dict(_BETAS, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
PNDM: Json = dict(_SD_SCHEDULER, skip_prk_steps=True)
DDIM: Json = dict(_SD_SCHEDULER, clip_sample=False)
EULER: Json = dict(_BETAS, steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")
EULER_A: Json = dict(_BETAS, steps_offset=1, prediction_type="epsilon")

# ---- UNets -----------------------------------------------------------------------------------------

_SD_BLOCKS: Json = dict(
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    layers_per_block=2,
)
UNET_SD1: Json = dict(_SD_BLOCKS, attention_head_dim=8, cross_attention_dim=768, sample_size=64)
UNET_SD2: Json = dict(
    _SD_BLOCKS, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True
)
_SDXL_COMMON: Json = dict(
    layers_per_block=2,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    addition_embed_type_num_heads=64,
    sample_size=128,
)
UNET_SDXL: Json = dict(
    _SDXL_COMMON,
    block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048,
    projection_class_embeddings_input_dim=2816,  # pooled 1280 + 6 size ids x 256
)
UNET_REFINER: Json = dict(
    _SDXL_COMMON,
    block_out_channels=[384, 768, 1536, 1536],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=4,
    attention_head_dim=[6, 12, 24, 24],
    cross_attention_dim=1280,
    projection_class_embeddings_input_dim=2560,  # pooled 1280 + 5 ids (sizes, aesthetic score) x 256
)

# ---- VAEs ------------------------------------------------------------------------------------------

_VAE: Json = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    latent_channels=4,
)
VAE_SD1: Json = dict(_VAE, sample_size=512, scaling_factor=0.18215)
VAE_SD2: Json = dict(_VAE, sample_size=768, scaling_factor=0.18215)  # 768 in both 2-1 repos
VAE_SDXL: Json = dict(_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

# ---- text encoders (transformers CLIPTextConfig) ---------------------------------------------------

_CLIP_TEXT: Json = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5)
CLIP_L: Json = dict(  # openai/clip-vit-large-patch14 text tower: SD1, SDXL's first encoder
    _CLIP_TEXT,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="quick_gelu",
    projection_dim=768,
)
OPENCLIP_H: Json = dict(  # OpenCLIP ViT-H/14 text tower, 23 of its 24 blocks (SD2 uses the penultimate)
    _CLIP_TEXT,
    hidden_size=1024,
    num_hidden_layers=23,
    num_attention_heads=16,
    intermediate_size=4096,
    hidden_act="gelu",
    projection_dim=512,
)
OPENCLIP_BIGG: Json = dict(  # OpenCLIP ViT-bigG/14 text tower with its projection: SDXL's second encoder
    _CLIP_TEXT,
    hidden_size=1280,
    num_hidden_layers=32,
    num_attention_heads=20,
    intermediate_size=5120,
    hidden_act="gelu",
    projection_dim=1280,
)

# ---- architectures ---------------------------------------------------------------------------------

_SD_PIPELINE: Json = dict(safety_checker=None, feature_extractor=None, image_encoder=None)
_SDXL_PIPELINE: Json = dict(image_encoder=None, feature_extractor=None, add_watermarker=False)

# arch -> (pipeline class, pipeline options, {component: (class, config values)})
ARCHES: dict[str, tuple[str, Json, dict[str, tuple[str, Json]]]] = {
    "sd1": (
        "StableDiffusionPipeline",
        dict(_SD_PIPELINE, requires_safety_checker=False),
        {
            "unet": ("UNet2DConditionModel", UNET_SD1),
            "vae": ("AutoencoderKL", VAE_SD1),
            "text_encoder": ("CLIPTextModel", CLIP_L),
            "tokenizer": ("CLIPTokenizer", {}),
            "scheduler": ("PNDMScheduler", PNDM),
        },
    ),
    "sd1-inpaint": (
        "StableDiffusionInpaintPipeline",
        dict(_SD_PIPELINE, requires_safety_checker=False),
        {
            "unet": ("UNet2DConditionModel", dict(UNET_SD1, in_channels=9)),
            "vae": ("AutoencoderKL", VAE_SD1),
            "text_encoder": ("CLIPTextModel", CLIP_L),
            "tokenizer": ("CLIPTokenizer", {}),
            "scheduler": ("DDIMScheduler", DDIM),
        },
    ),
    "sd1-edit": (
        "StableDiffusionInstructPix2PixPipeline",
        dict(_SD_PIPELINE, requires_safety_checker=False),
        {
            "unet": ("UNet2DConditionModel", dict(UNET_SD1, in_channels=8)),
            "vae": ("AutoencoderKL", VAE_SD1),
            "text_encoder": ("CLIPTextModel", CLIP_L),
            "tokenizer": ("CLIPTokenizer", {}),
            "scheduler": ("EulerAncestralDiscreteScheduler", EULER_A),
        },
    ),
    "sd2": (
        "StableDiffusionPipeline",
        dict(_SD_PIPELINE, requires_safety_checker=False),
        {
            "unet": ("UNet2DConditionModel", dict(UNET_SD2, sample_size=64)),
            "vae": ("AutoencoderKL", VAE_SD2),
            "text_encoder": ("CLIPTextModel", OPENCLIP_H),
            "tokenizer": ("CLIPTokenizer", {}),
            "scheduler": ("PNDMScheduler", PNDM),
        },
    ),
    "sd2-v": (
        "StableDiffusionPipeline",
        dict(_SD_PIPELINE, requires_safety_checker=False),
        {
            "unet": ("UNet2DConditionModel", dict(UNET_SD2, sample_size=96, upcast_attention=True)),
            "vae": ("AutoencoderKL", VAE_SD2),
            "text_encoder": ("CLIPTextModel", OPENCLIP_H),
            "tokenizer": ("CLIPTokenizer", {}),
            "scheduler": ("DDIMScheduler", dict(DDIM, prediction_type="v_prediction")),
        },
    ),
    "sdxl": (
        "StableDiffusionXLPipeline",
        dict(_SDXL_PIPELINE, force_zeros_for_empty_prompt=True),
        {
            "unet": ("UNet2DConditionModel", UNET_SDXL),
            "vae": ("AutoencoderKL", VAE_SDXL),
            "text_encoder": ("CLIPTextModel", CLIP_L),
            "text_encoder_2": ("CLIPTextModelWithProjection", OPENCLIP_BIGG),
            "tokenizer": ("CLIPTokenizer", {}),
            "tokenizer_2": ("CLIPTokenizer", {}),
            "scheduler": ("EulerDiscreteScheduler", EULER),
        },
    ),
    "sdxl-refiner": (
        "StableDiffusionXLImg2ImgPipeline",
        dict(
            _SDXL_PIPELINE,
            text_encoder=None,
            tokenizer=None,
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
        ),
        {
            "unet": ("UNet2DConditionModel", UNET_REFINER),
            "vae": ("AutoencoderKL", VAE_SDXL),
            "text_encoder_2": ("CLIPTextModelWithProjection", OPENCLIP_BIGG),
            "tokenizer_2": ("CLIPTokenizer", {}),
            "scheduler": ("EulerDiscreteScheduler", EULER),
        },
    ),
}

TOKENIZER_CLASSES = ("CLIPTokenizer",)
TRANSFORMERS_MODELS = ("CLIPTextModel", "CLIPTextModelWithProjection")


def _dump(data: Json) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _diffusers_json(class_name: str, values: Json) -> str:
    """The config JSON diffusers writes for `class_name` built with `values` (models on meta)."""
    import diffusers
    from accelerate import init_empty_weights

    cls = getattr(diffusers, class_name)
    if issubclass(cls, diffusers.SchedulerMixin):
        obj = cls.from_config(values)
    else:
        with init_empty_weights():
            obj = cls.from_config(values)
    text: str = obj.to_json_string()
    return text


def _transformers_json(class_name: str, values: Json) -> str:
    """The config.json transformers writes for a `class_name` model with these CLIPTextConfig values."""
    from transformers import CLIPTextConfig

    text: str = CLIPTextConfig(architectures=[class_name], **values).to_json_string(use_diff=True)
    return text


def model_index(arch: str) -> str:
    import diffusers

    pipeline, options, components = ARCHES[arch]
    index: Json = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__}
    for name, (class_name, _) in components.items():
        library = "transformers" if class_name in TOKENIZER_CLASSES + TRANSFORMERS_MODELS else "diffusers"
        index[name] = [library, class_name]
    for key, value in options.items():
        index[key] = [None, None] if value is None else value
    return _dump(index)


def arch_files(arch: str) -> dict[str, str]:
    """Relative path -> text of every file of one architecture folder."""
    files = {"model_index.json": model_index(arch)}
    for name, (class_name, values) in ARCHES[arch][2].items():
        if class_name in TOKENIZER_CLASSES:
            continue
        if class_name in TRANSFORMERS_MODELS:
            files[f"{name}/config.json"] = _transformers_json(class_name, values)
        elif name == "scheduler":
            files["scheduler/scheduler_config.json"] = _diffusers_json(class_name, values)
        else:
            files[f"{name}/config.json"] = _diffusers_json(class_name, values)
    return files


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = parser.parse_args(argv)
    differing = []
    for arch in ARCHES:
        for rel, text in arch_files(arch).items():
            path = HERE / arch / rel
            if args.check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    differing.append(f"{arch}/{rel}")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if differing:
        print("differ from what the installed libraries write:\n  " + "\n  ".join(differing))
        return 1
    print("OK: every config file matches" if args.check else f"wrote {len(ARCHES)} config folders in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
