"""Tiny IP-Adapters for the tiny SD1 UNet and a tiny CLIP vision encoder, in the layouts real files use.

- the encoder: a transformers `CLIPVisionModelWithProjection` (hidden 32, one head, 32 px images in
  8 px patches, projection 24), saved in the transformers layout as ComfyUI keeps h94's image encoder,
  under a ViT-H name in models/clip_vision;
- IP-Adapter (base): `image_proj.proj` (4 tokens of the tiny text width 32) + `image_proj.norm`, and
  `ip_adapter.<2i+1>.to_k_ip/to_v_ip.weight` for the i-th cross-attention layer of the tiny SD1 UNet
  (diffusers' `attn_processors` order), as .safetensors and as a .bin of nested dicts;
- IP-Adapter Plus: the Resampler in the original (TencentARC) key layout: `latents`, `proj_in`,
  `layers.<i>.0.{norm1,norm2,to_q,to_kv,to_out}`, `layers.<i>.1.{0,1,3}`, `proj_out`, `norm_out`.

Every weight is drawn from a seeded generator (nothing is zero), so an adapter visibly changes an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from webui.core.models.tiny import _randomize, unet_config

ENCODER_NAME = "CLIP-ViT-H-14-tiny.safetensors"
CLIP = dict(
    hidden_size=32, intermediate_size=64, projection_dim=24, num_hidden_layers=2, num_attention_heads=1,
    num_channels=3, image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5,
)  # fmt: skip
PLUS = dict(embed_dims=32, output_dims=32, hidden_dims=64, heads=1, num_queries=4)


def build_tiny_clip_vision(seed: int = 30) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP))
    _randomize(model, torch.Generator().manual_seed(seed))
    return model.eval()


def _layer_shapes(arch: str = "sd1") -> list[tuple[int, int]]:
    """(out, in) of each cross-attention layer's to_k in the tiny UNet, in `attn_processors` order."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(arch))
    modules = dict(unet.named_modules())
    names = [n.removesuffix(".processor") for n in unet.attn_processors if n.endswith("attn2.processor")]
    return [tuple(modules[n].to_k.weight.shape) for n in names]  # type: ignore[misc]


def _random(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=gen) * (shape[-1] ** -0.5 if len(shape) > 1 else 0.1)


def ip_adapter_layers(gen: torch.Generator, arch: str = "sd1") -> dict[str, Tensor]:
    out = {}
    for i, shape in enumerate(_layer_shapes(arch)):
        for kind in ("k", "v"):
            out[f"{2 * i + 1}.to_{kind}_ip.weight"] = _random(shape, gen)
    return out


def base_image_proj(gen: torch.Generator, text_width: int = 32, embed: int = 24) -> dict[str, Tensor]:
    return {
        "proj.weight": _random((4 * text_width, embed), gen),
        "proj.bias": _random((4 * text_width,), gen),
        "norm.weight": 1 + _random((text_width,), gen),
        "norm.bias": _random((text_width,), gen),
    }


def build_tiny_resampler(seed: int = 40) -> Any:
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    with torch.random.fork_rng(devices=[]):
        model = IPAdapterPlusImageProjection(**PLUS)
    _randomize(model, torch.Generator().manual_seed(seed))
    return model.eval()


def resampler_to_original(model: Any) -> dict[str, Tensor]:
    """The Resampler's weights under the original IP-Adapter names."""
    out: dict[str, Tensor] = {}
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] != "layers":
            out[key] = value
            continue
        i, rest = parts[1], ".".join(parts[2:])
        renamed = {
            "ln0.weight": "0.norm1.weight", "ln0.bias": "0.norm1.bias",
            "ln1.weight": "0.norm2.weight", "ln1.bias": "0.norm2.bias",
            "attn.to_q.weight": "0.to_q.weight", "attn.to_out.0.weight": "0.to_out.weight",
            "ff.0.weight": "1.0.weight", "ff.0.bias": "1.0.bias",
            "ff.1.net.0.proj.weight": "1.1.weight", "ff.1.net.2.weight": "1.3.weight",
        }  # fmt: skip
        if rest in renamed:
            out[f"layers.{i}.{renamed[rest]}"] = value
        elif rest == "attn.to_k.weight":
            out[f"layers.{i}.0.to_kv.weight"] = torch.cat([value, sd[f"layers.{i}.attn.to_v.weight"]])
        elif rest != "attn.to_v.weight":
            raise KeyError(key)
    return out


def adapter_state(kind: str, seed: int) -> dict[str, dict[str, Tensor]]:
    """{"image_proj": ..., "ip_adapter": ...} of a tiny SD1 IP-Adapter ("base" or "plus")."""
    gen = torch.Generator().manual_seed(seed)
    proj = base_image_proj(gen) if kind == "base" else resampler_to_original(build_tiny_resampler(seed))
    return {"image_proj": proj, "ip_adapter": ip_adapter_layers(gen)}


def flat(parts: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    return {f"{part}.{k}": v for part, sub in parts.items() for k, v in sub.items()}


def write_ip_adapters(models_dir: Path) -> dict[str, Path]:
    """models/clip_vision/<ENCODER_NAME> and tiny SD1 IP-Adapters: {"encoder", "base", "base-bin",
    "plus", "base-2", "sdxl"} -> path (base in models/ControlNet as sd-webui-controlnet keeps it, plus in
    models/ipadapter as ComfyUI does; base-2 other weights; sdxl one for the tiny SDXL UNet)."""
    (models_dir / "clip_vision").mkdir(parents=True, exist_ok=True)
    (models_dir / "ControlNet").mkdir(parents=True, exist_ok=True)
    (models_dir / "ipadapter").mkdir(parents=True, exist_ok=True)
    encoder = build_tiny_clip_vision()
    out = {"encoder": models_dir / "clip_vision" / ENCODER_NAME}
    save_file(
        {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}, str(out["encoder"])
    )
    base = adapter_state("base", 50)
    out["base"] = models_dir / "ControlNet" / "ip-adapter_sd15_tiny.safetensors"
    save_file(flat(base), str(out["base"]))
    out["base-bin"] = models_dir / "ipadapter" / "ip-adapter_sd15_tiny_bin.bin"
    torch.save(base, out["base-bin"])
    out["plus"] = models_dir / "ipadapter" / "ip-adapter-plus_sd15_tiny.safetensors"
    save_file(flat(adapter_state("plus", 60)), str(out["plus"]))
    out["base-2"] = models_dir / "ControlNet" / "ip-adapter_sd15_tiny_other.safetensors"
    save_file(flat(adapter_state("base", 70)), str(out["base-2"]))
    gen = torch.Generator().manual_seed(80)
    sdxl = {"image_proj": base_image_proj(gen, text_width=80), "ip_adapter": ip_adapter_layers(gen, "sdxl")}
    out["sdxl"] = models_dir / "ipadapter" / "ip-adapter_sdxl_tiny.safetensors"
    save_file(flat(sdxl), str(out["sdxl"]))
    return out
