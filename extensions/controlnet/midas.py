"""The depth_midas and normal_midas preprocessors: MiDaS v3 DPT-Hybrid (a ResNet-50 "BiT" stem feeding a
ViT-B/16, and a DPT head) run by transformers' DPTForDepthEstimation (`is_hybrid`), from the original
release's `dpt_hybrid-midas-501f0c75.pt` in models/ControlNet/annotators (read with the safe loader).

The original names, converted here (the ImageNet classifier `pretrained.model.head` is unused and dropped):

    pretrained.model.patch_embed.backbone.stem.conv / .norm     -> dpt.embeddings.backbone.bit.embedder.
                                                                   convolution / norm
    pretrained.model.patch_embed.backbone.stages.S.blocks.B.*   -> ...bit.encoder.stages.S.layers.B.*
    pretrained.model.patch_embed.proj                           -> dpt.embeddings.projection
    pretrained.model.blocks.N.norm1 / norm2 / attn.qkv / attn.proj / mlp.fc1 / mlp.fc2
        -> dpt.encoder.layer.N.layernorm_before / layernorm_after / attention.attention.{query,key,value}
           / attention.output.dense / intermediate.dense / output.dense
    pretrained.model.norm, cls_token, pos_embed                 -> dpt.layernorm, dpt.embeddings.*
    pretrained.act_postprocessK.0.project.0 / .3 / .4           -> neck.reassemble_stage.readout_projects.
                                                                   K-1.0 / layers.K-1.projection / .resize
    scratch.layerK_rn, scratch.refinenetK, scratch.output_conv.I -> neck.convs.K-1,
                                                                   neck.fusion_stage.layers.4-K, head.head.I

Sizes (ViT width and depth, ResNet widths and block counts, DPT widths) are read from the tensors. As
sd-webui-controlnet: the image, scaled to the preprocessor resolution, is edge-padded to multiples of 64,
mapped to [-1, 1] and run at that size; depth is min-max scaled to 0..255; the normal map is the Sobel
gradient of the raw depth (x, y) with z = 2 pi, zeroed where the scaled depth is below the background
threshold, normalised, as RGB = normal * 127.5 + 127.5. The padding is cropped off at the end.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from transformers import BitConfig, DPTConfig, DPTForDepthEstimation

from .annotator_files import AnnotatorFileError, Nets, misfit, read_state

FILE = "dpt_hybrid-midas-501f0c75.pt"
MODULES = ("depth_midas", "normal_midas")
HEAD_DIM, PATCH, PAD = 64, 16, 64
NORMAL_Z = 2 * math.pi  # sd-webui-controlnet's `a`
_VIT, _BIT = "pretrained.model.", "pretrained.model.patch_embed.backbone."

_RULES = [  # (original name pattern, transformers name), the first match wins
    (r"pretrained\.model\.cls_token", "dpt.embeddings.cls_token"),
    (r"pretrained\.model\.pos_embed", "dpt.embeddings.position_embeddings"),
    (
        r"pretrained\.model\.patch_embed\.backbone\.stem\.conv\.",
        "dpt.embeddings.backbone.bit.embedder.convolution.",
    ),
    (r"pretrained\.model\.patch_embed\.backbone\.stem\.norm\.", "dpt.embeddings.backbone.bit.embedder.norm."),
    (
        r"pretrained\.model\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.",
        r"dpt.embeddings.backbone.bit.encoder.stages.\1.layers.\2.",
    ),
    (r"pretrained\.model\.patch_embed\.proj\.", "dpt.embeddings.projection."),
    (r"pretrained\.model\.blocks\.(\d+)\.norm1\.", r"dpt.encoder.layer.\1.layernorm_before."),
    (r"pretrained\.model\.blocks\.(\d+)\.norm2\.", r"dpt.encoder.layer.\1.layernorm_after."),
    (r"pretrained\.model\.blocks\.(\d+)\.attn\.proj\.", r"dpt.encoder.layer.\1.attention.output.dense."),
    (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc1\.", r"dpt.encoder.layer.\1.intermediate.dense."),
    (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc2\.", r"dpt.encoder.layer.\1.output.dense."),
    (r"pretrained\.model\.norm\.", "dpt.layernorm."),
    (r"scratch\.output_conv\.(\d)\.", r"head.head.\1."),
]
_SHIFTED = {  # pretrained.act_postprocessK.<part>: K becomes K - 1
    "0.project.0": "neck.reassemble_stage.readout_projects.{}.0.",
    "3": "neck.reassemble_stage.layers.{}.projection.",
    "4": "neck.reassemble_stage.layers.{}.resize.",
}


def _rename(key: str) -> str:
    if m := re.fullmatch(r"pretrained\.act_postprocess([1-4])\.(0\.project\.0|3|4)\.(.+)", key):
        return _SHIFTED[m.group(2)].format(int(m.group(1)) - 1) + m.group(3)
    if m := re.fullmatch(r"scratch\.layer([1-4])_rn\.(.+)", key):
        return f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"
    if m := re.fullmatch(r"scratch\.refinenet([1-4])\.(.+)", key):
        rest = m.group(2).replace("out_conv", "projection")
        rest = re.sub(r"resConfUnit([12])\.conv([12])", r"residual_layer\1.convolution\2", rest)
        return f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"
    for pattern, repl in _RULES:
        new, n = re.subn("^" + pattern, repl, key, count=1)
        if n:
            return new
    return key  # unknown: the strict load names it


def to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original state dict under transformers' names (qkv split into query, key, value)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_VIT + "head."):
            continue
        if m := re.fullmatch(r"pretrained\.model\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            prefix = f"dpt.encoder.layer.{m.group(1)}.attention.attention"
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.{name}.{m.group(2)}"] = part
            continue
        out[_rename(key)] = value
    return out


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.match(pattern, k))})


def config_from(sd: dict[str, torch.Tensor], name: str) -> DPTConfig:
    """A DPT-Hybrid config that fits the original state dict `sd` (named `name` in errors)."""
    need = (
        _VIT + "pos_embed", _VIT + "blocks.0.mlp.fc1.weight", _BIT + "stem.conv.weight",
        *(f"{_BIT}stages.{s}.blocks.0.conv3.weight" for s in range(3)),
        *(f"scratch.layer{k}_rn.weight" for k in range(1, 5)), "scratch.output_conv.0.weight",
    )  # fmt: skip
    missing = [k for k in need if k not in sd]
    if missing:
        raise AnnotatorFileError(f"{name}: not a MiDaS DPT-Hybrid model (no {missing[0]})")
    hidden = int(sd[_VIT + "pos_embed"].shape[-1])
    layers = _count(sd, r"pretrained\.model\.blocks\.(\d+)\.")
    if hidden % HEAD_DIM or layers < 2:
        raise AnnotatorFileError(f"{name}: not a ViT-B/16 hybrid backbone (width {hidden}, {layers} blocks)")
    grid = math.isqrt(int(sd[_VIT + "pos_embed"].shape[1]) - 1)
    widths = [int(sd[f"{_BIT}stages.{s}.blocks.0.conv3.weight"].shape[0]) for s in range(3)]
    bit = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        embedding_size=int(sd[_BIT + "stem.conv.weight"].shape[0]),
        hidden_sizes=widths,
        depths=[_count(sd, re.escape(f"{_BIT}stages.{s}.blocks.") + r"(\d+)\.") for s in range(3)],
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    rn = [sd[f"scratch.layer{k}_rn.weight"] for k in range(1, 5)]
    return DPTConfig(
        is_hybrid=True,
        backbone_config=bit,
        backbone_featmap_shape=[1, widths[2], grid, grid],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_DIM,
        intermediate_size=int(sd[_VIT + "blocks.0.mlp.fc1.weight"].shape[0]),
        layer_norm_eps=1e-6,  # timm's ViT
        image_size=grid * PATCH,
        patch_size=PATCH,
        backbone_out_indices=[0, 1, layers * 3 // 4 - 1, layers - 1],  # ViT-B: blocks 8 and 11 (0-based)
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[int(w.shape[1]) for w in rn],
        fusion_hidden_size=int(rn[0].shape[0]),
        use_batch_norm_in_fusion_residual=False,
        use_auxiliary_head=False,
    )


def load_model(path: Path) -> DPTForDepthEstimation:
    """The model in `path` (eval, fp32, CPU), every key loaded strictly; AnnotatorFileError names the file."""
    return model_from(read_state(path), path)


def model_from(sd: dict[str, torch.Tensor], path: Path) -> DPTForDepthEstimation:
    """The model holding `sd` (the state dict of `path`, named in errors), with the lock `predict` takes
    while it sets the input size on it (a cached model may serve a job and /controlnet/detect at once)."""
    config = config_from(sd, path.name)
    with torch.device("meta"):
        model = DPTForDepthEstimation(config)
    try:
        weights = {k: v.float() for k, v in to_transformers(sd).items()}
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise misfit(path, e) from e
    model.size_lock = threading.Lock()  # type: ignore[assignment]
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(model: DPTForDepthEstimation, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The raw relative inverse depth (float32) of an RGB uint8 array whose sides are multiples of 64, the
    model run on `device` (its parts are called one by one: the input is put there, not left to hooks).

    transformers' DPT-Hybrid forward assumes a square token grid in its neck (and checks the input against
    the config's size), while the original runs any multiple of 16: the parts are called here with the
    grid's own height and width (the embeddings resize their position table to it)."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None].to(device)
    with model.size_lock:
        model.dpt.embeddings.image_size = (h, w)  # this input's size: the table is resized to h/16 x w/16
        out = model.dpt(pixel_values=x, output_hidden_states=True)
    taps = model.config.backbone_out_indices[2:]
    features = [*out.intermediate_activations, *(s for i, s in enumerate(out.hidden_states[1:]) if i in taps)]
    features = model.neck(features, h // PATCH, w // PATCH)
    return model.head(features)[0].cpu().numpy()


def pad64(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, -h % PAD), (0, -w % PAD), (0, 0)), mode="edge")


def scaled(depth: np.ndarray) -> np.ndarray:
    """Depth min-max scaled to [0, 1] (a flat map: all 0)."""
    lo, span = float(depth.min()), float(depth.max() - depth.min())
    return (depth - lo) / span if span > 0 else np.zeros_like(depth)


def normal_map(depth: np.ndarray, bg_threshold: float) -> np.ndarray:
    """sd-webui-controlnet's normal from depth: (Sobel x, Sobel y, 2 pi), flat where the scaled depth is
    below `bg_threshold`, unit length, as uint8 RGB."""
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = scaled(depth) < bg_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, np.full_like(x, NORMAL_Z)], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


def run(
    path: Path, module: str, rgb: np.ndarray, bg_threshold: float, nets: Nets | None = None
) -> Image.Image:
    """The RGB map of `rgb` (the image already scaled to the preprocessor resolution): depth for
    depth_midas, normals for normal_midas; the model from `nets` (default: read now, on the CPU)."""
    h, w = rgb.shape[:2]
    nets = nets or Nets()
    with nets.use(path, lambda sd: model_from(sd, path)) as model:
        depth = predict(model, pad64(rgb), nets.run_device)
    if module == "normal_midas":
        return Image.fromarray(normal_map(depth, bg_threshold)[:h, :w])
    gray = (scaled(depth) * 255.0).clip(0, 255).astype(np.uint8)[:h, :w]
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
