"""The depth_anything and depth_anything_v2 preprocessors: Depth Anything (a DINOv2 ViT/14 backbone and a
DPT head) run by transformers' DepthAnythingForDepthEstimation, from the original release's state dict.

Files (models/ControlNet/annotators, sd-webui-controlnet's names): `depth_anything_vitl14.pth` (v1) and
`depth_anything_v2_vitl.safetensors` (v2). Both hold the original key layout (`pretrained.*` for the ViT,
`depth_head.*` for the DPT head); they are converted to transformers' names here, and the model is built
from a config sized from the tensors (ViT-S, B and L files all load), never fetched from a hub:

    pretrained.blocks.N.attn.qkv    -> backbone.encoder.layer.N.attention.{q,k,v}_proj (split in 3 rows)
    pretrained.blocks.N.attn.proj   -> ...attention.o_proj
    pretrained.blocks.N.ls1/ls2     -> ...layer_scale1/2.lambda1       (norm1/2, mlp.fc1/fc2 keep names)
    depth_head.projects.i           -> neck.reassemble_stage.layers.i.projection   (resize_layers: .resize)
    depth_head.scratch.layerK_rn    -> neck.convs.K-1
    depth_head.scratch.refinenetK   -> neck.fusion_stage.layers.4-K    (out_conv: projection,
                                        resConfUnitJ.convM: residual_layerJ.convolutionM)
    depth_head.scratch.output_conv1 / output_conv2.0 / output_conv2.2 -> head.conv1 / conv2 / conv3

The two versions differ only in which ViT layers feed the head: v1 the last four, v2 four spread through
the network (ViT-S/B: 3, 6, 9, 12; ViT-L: 5, 12, 18, 24, as the original code indexes them from 1).

Pre/post-processing as sd-webui-controlnet: RGB in [0, 1], resized (cubic) so both sides are at least 518
and multiples of 14, ImageNet mean/std; the predicted (relative inverse) depth is resized back (bilinear)
to the preprocessor-resolution image and min-max scaled to 0..255, grey in all three channels. The
network gets RGB, as trained (sd-webui-controlnet applies BGR2RGB to an RGB image, swapping channels).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from .annotator_files import AnnotatorFileError, Nets, misfit, read_state

FILES = {
    "depth_anything": "depth_anything_vitl14.pth",
    "depth_anything_v2": "depth_anything_v2_vitl.safetensors",
}
NET_SIZE, MULTIPLE = 518, 14
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD_DIM = 64  # every DINOv2 ViT (S: 6 heads of 384, B: 12 of 768, L: 16 of 1024)
_V2_LAYERS = {12: (3, 6, 9, 12), 24: (5, 12, 18, 24), 40: (10, 20, 30, 40)}

_RULES = [  # (original name pattern, transformers name), applied in order to the whole key
    (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
    (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
    (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
    (r"pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"pretrained\.blocks\.(\d+)\.ls([12])\.gamma", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
    (r"pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.o_proj."),
    (r"pretrained\.blocks\.(\d+)\.(norm[12]|mlp\.fc[12])\.", r"backbone.encoder.layer.\1.\2."),
    (r"pretrained\.norm\.", "backbone.layernorm."),
    (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]


def _rename(key: str) -> str | None:
    for pattern, repl in _RULES:
        new, n = re.subn("^" + pattern, repl, key, count=1)
        if n:
            return new
    if m := re.fullmatch(r"depth_head\.scratch\.layer([1-4])_rn\.weight", key):
        return f"neck.convs.{int(m.group(1)) - 1}.weight"
    if m := re.fullmatch(r"depth_head\.scratch\.refinenet([1-4])\.(.+)", key):
        rest = m.group(2).replace("out_conv", "projection")
        rest = re.sub(r"resConfUnit([12])\.conv([12])", r"residual_layer\1.convolution\2", rest)
        return f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"
    return None


def to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original state dict under transformers' names (qkv split into query, key, value); a key it
    does not know is kept as it is, so a strict load names it."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if m := re.fullmatch(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            prefix = f"backbone.encoder.layer.{m.group(1)}.attention"
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.{name}_proj.{m.group(2)}"] = part
            continue
        out[_rename(key) or key] = value
    return out


def out_indices(layers: int, version: int) -> list[int]:
    """The ViT layers (1-based, as transformers' backbone counts them) that feed the DPT head."""
    if version == 1:
        return list(range(layers - 3, layers + 1))
    if layers in _V2_LAYERS:
        return list(_V2_LAYERS[layers])
    return [layers * k // 4 for k in range(1, 5)]


def config_from(sd: dict[str, torch.Tensor], version: int, name: str) -> DepthAnythingConfig:
    """A config that fits the original state dict `sd` (named `name` in errors)."""
    need = (
        "pretrained.pos_embed", "pretrained.patch_embed.proj.weight", "depth_head.scratch.layer1_rn.weight",
        *(f"depth_head.projects.{i}.weight" for i in range(4)), "depth_head.scratch.output_conv2.0.weight",
    )  # fmt: skip
    missing = [k for k in need if k not in sd]
    if missing:
        raise AnnotatorFileError(f"{name}: not a Depth Anything model (no {missing[0]})")
    if any(".mlp.w12." in k for k in sd):
        raise AnnotatorFileError(
            f"{name}: a ViT-G (SwiGLU) Depth Anything model is not supported; use ViT-S/B/L"
        )
    hidden = int(sd["pretrained.pos_embed"].shape[-1])
    patch = int(sd["pretrained.patch_embed.proj.weight"].shape[-1])
    grid = math.isqrt(int(sd["pretrained.pos_embed"].shape[1]) - 1)
    layers = len({m.group(1) for k in sd if (m := re.match(r"pretrained\.blocks\.(\d+)\.", k))})
    if hidden % HEAD_DIM or layers % 4 or "pretrained.blocks.0.mlp.fc1.weight" not in sd:
        raise AnnotatorFileError(f"{name}: not a DINOv2 ViT-S/B/L backbone (width {hidden}, {layers} blocks)")
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_DIM,
        mlp_ratio=int(sd["pretrained.blocks.0.mlp.fc1.weight"].shape[0]) // hidden,
        patch_size=patch,
        image_size=grid * patch,
        out_indices=out_indices(layers, version),
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=patch,
        neck_hidden_sizes=[int(sd[f"depth_head.projects.{i}.weight"].shape[0]) for i in range(4)],
        fusion_hidden_size=int(sd["depth_head.scratch.layer1_rn.weight"].shape[0]),
        head_hidden_size=int(sd["depth_head.scratch.output_conv2.0.weight"].shape[0]),
        depth_estimation_type="relative",
    )


def load_model(path: Path, version: int) -> DepthAnythingForDepthEstimation:
    """The model in `path` (eval, fp32, CPU), every key loaded strictly; AnnotatorFileError names the file."""
    return model_from(read_state(path), version, path)


def model_from(sd: dict[str, torch.Tensor], version: int, path: Path) -> DepthAnythingForDepthEstimation:
    """The model of `version` holding `sd` (the state dict of `path`, named in errors)."""
    config = config_from(sd, version, path.name)
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    try:
        model.load_state_dict(
            {k: v.float() for k, v in to_transformers(sd).items()}, strict=True, assign=True
        )
    except RuntimeError as e:
        raise misfit(path, e) from e
    return model.eval().requires_grad_(False)


def net_size(h: int, w: int) -> tuple[int, int]:
    """The network's input size for an h x w image: aspect kept, both sides at least 518 (the smaller
    scale raised to the larger), each rounded to a multiple of 14 (up if rounding fell below 518)."""
    scale = max(NET_SIZE / h, NET_SIZE / w)

    def fit(x: float) -> int:
        y = round(x / MULTIPLE) * MULTIPLE
        return y if y >= NET_SIZE else math.ceil(x / MULTIPLE) * MULTIPLE

    return fit(scale * h), fit(scale * w)


@torch.no_grad()
def predict(
    model: DepthAnythingForDepthEstimation, rgb: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """The relative inverse depth (float32, H x W) of an RGB uint8 array, at the array's size; the model
    runs on `device`."""
    h, w = rgb.shape[:2]
    nh, nw = net_size(h, w)
    x = cv2.resize(rgb.astype(np.float32) / 255.0, (nw, nh), interpolation=cv2.INTER_CUBIC)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    pixels = torch.from_numpy(x).permute(2, 0, 1)[None].to(device)
    depth = model(pixel_values=pixels).predicted_depth  # (1, nh, nw)
    depth = torch.nn.functional.interpolate(depth[None], (h, w), mode="bilinear", align_corners=False)
    return depth[0, 0].cpu().numpy()


def to_gray(depth: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..255 (uint8, truncated as the original); a flat map is black."""
    lo, hi = float(depth.min()), float(depth.max())
    if hi - lo <= 0:
        return np.zeros(depth.shape, np.uint8)
    return ((depth - lo) / (hi - lo) * 255.0).astype(np.uint8)


def run(path: Path, version: int, rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """The RGB depth map of `rgb` (the image already scaled to the preprocessor resolution), the model
    from `nets` (default: read now, on the CPU). Each file is one version (FILES), so a cached model
    is always the one its file's version builds."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: model_from(sd, version, path)) as model:
        gray = to_gray(predict(model, rgb, nets.run_device))
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
