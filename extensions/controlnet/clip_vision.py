"""CLIP vision encoders for IP-Adapter units: which file a module reads, building it, encoding an image.

sd-webui-controlnet's IP-Adapter modules name the encoder they run:

    ip-adapter_clip_sd15 (ip-adapter_clip_h), ip-adapter_clip_sdxl_plus_vith  -> ViT-H/14
    ip-adapter_clip_sdxl (ip-adapter_clip_g)                                   -> ViT-bigG/14

The encoders are read from `models/clip_vision`, where ComfyUI and Forge keep them, in the transformers
layout of h94/IP-Adapter's `image_encoder/model.safetensors` (`vision_model.*`, `visual_projection.*`),
under the names those UIs use (`CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors`,
`CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors`; `clip_h.pth` / `clip_g.pth` as sd-webui-controlnet
calls them). A file is chosen by its name; when no name says which, a lone file is used (the widths
are checked against the adapter before it runs).

The `CLIPVisionModelWithProjection` config is read from the tensor shapes; the head count and the
activation leave no trace in the weights and come from the known encoders (16 heads of 64 for ViT-L,
80 for ViT-H, 104 for bigG; quick-GELU for OpenAI's ViT-L, GELU for the LAION ones).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .layout import ControlNetFileError

FOLDER = "clip_vision"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
ENCODERS = {
    "ViT-H": ("vit-h", "vith", "clip_h", "clip-h"),
    "ViT-bigG": ("bigg", "vit-g", "clip_g", "clip-g"),
}
MODULES = {  # sd-webui-controlnet's IP-Adapter preprocessors (and their newer names) -> encoder
    "ip-adapter_clip_sd15": "ViT-H",
    "ip-adapter_clip_h": "ViT-H",
    "ip-adapter_clip_sdxl_plus_vith": "ViT-H",
    "ip-adapter_clip_sdxl": "ViT-bigG",
    "ip-adapter_clip_g": "ViT-bigG",
}
EXAMPLE_FILES = {
    "ViT-H": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
    "ViT-bigG": "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
}
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}
_QUICK_GELU = (1024,)  # OpenAI's ViT-L/14
# CLIP's pixel normalisation (OpenAI's figures, which the LAION encoders were trained with too)
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")


class EncoderMissing(ValueError):
    """No CLIP vision encoder for a module in models/clip_vision; the message names the file to add."""


def is_ip_module(module: str) -> bool:
    return module in MODULES


def find_encoder(module: str, models_dir: Path) -> Path:
    """The encoder file `module` runs (EncoderMissing naming the file to add when there is none)."""
    kind = MODULES[module]
    folder = models_dir / FOLDER
    files = (
        sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if folder.is_dir()
        else []
    )
    named = [p for p in files if any(tag in p.stem.lower() for tag in ENCODERS[kind])]
    others = [
        p for p in files if not any(tag in p.stem.lower() for tags in ENCODERS.values() for tag in tags)
    ]
    if named:
        return named[0]
    if len(files) == 1 and others:
        return files[0]
    present = f" (it holds {', '.join(p.name for p in files)})" if files else ""
    raise EncoderMissing(
        f"the {module} preprocessor needs the CLIP {kind}/14 vision encoder in models/{FOLDER}{present}: add "
        f"{EXAMPLE_FILES[kind]} (h94/IP-Adapter's image encoder, as ComfyUI and Forge name it)"
    )


def vision_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A `CLIPVisionConfig` (as keyword arguments) from a transformers-layout state dict."""
    if any(k.startswith("visual.") for k in sd):
        raise ControlNetFileError(
            "an OpenCLIP-layout vision encoder; use the transformers layout (h94/IP-Adapter's "
            "image_encoder/model.safetensors, as ComfyUI and Forge use)"
        )
    try:
        patch = sd["vision_model.embeddings.patch_embedding.weight"]
        positions = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
        fc1 = sd["vision_model.encoder.layers.0.mlp.fc1.weight"]
        projection = sd["visual_projection.weight"]
    except KeyError as e:
        raise ControlNetFileError(f"not a CLIP vision encoder with a projection (no {e.args[0]})") from None
    hidden, channels, size = int(patch.shape[0]), int(patch.shape[1]), int(patch.shape[2])
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise ControlNetFileError(f"a CLIP vision encoder with {positions} positions is not a square grid")
    return {
        "hidden_size": hidden,
        "intermediate_size": int(fc1.shape[0]),
        "projection_dim": int(projection.shape[0]),
        "num_hidden_layers": len({m.group(1) for k in sd if (m := _LAYER.match(k))}),
        "num_attention_heads": _HEADS.get(hidden, max(1, hidden // 64)),
        "num_channels": channels,
        "image_size": side * size,
        "patch_size": size,
        "hidden_act": "quick_gelu" if hidden in _QUICK_GELU else "gelu",
        "layer_norm_eps": 1e-5,
    }


def build_encoder(sd: dict[str, torch.Tensor], name: str) -> Any:
    """A transformers `CLIPVisionModelWithProjection` filled with the file's tensors (created without
    weights first, so a 2.5 GB encoder is never initialised at random)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:
        cfg = CLIPVisionConfig(**vision_config(sd))
    except ControlNetFileError as e:
        raise ControlNetFileError(f"{name}: {e}") from e
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(cfg)
    weights = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise ControlNetFileError(f"{name}: weights do not fit: {str(e).splitlines()[0]}") from e
    for module in model.modules():  # buffers the file does not hold (position ids) are still on meta
        for key, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                module.register_buffer(key, torch.arange(buf.numel()).reshape(buf.shape), persistent=False)
    return model.eval()


def pixels(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP's input, (1, 3, S, S): the short side scaled to `size` (bicubic), centre square, normalised."""
    rgb = image.convert("RGB")
    k = size / min(rgb.size)
    w, h = max(size, round(rgb.width * k)), max(size, round(rgb.height * k))
    rgb = rgb.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    a = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((a - mean) / std).unsqueeze(0)


@torch.no_grad()
def encode(encoder: Any, image: Image.Image, hidden_states: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features, unconditional features) as IP-Adapters read them: the projected embedding and
    zeros (base), or the penultimate hidden states of the image and of an all-zero input (plus)."""
    p = next(encoder.parameters())
    x = pixels(image, int(encoder.config.image_size)).to(device=p.device, dtype=p.dtype)
    if not hidden_states:
        embeds = encoder(x).image_embeds
        return embeds, torch.zeros_like(embeds)
    both = encoder(torch.cat([x, torch.zeros_like(x)]), output_hidden_states=True).hidden_states[-2]
    return both[:1], both[1:]
