"""Depth annotator files in their original key layout, written from the original networks' structure
(not from transformers' model), so a converter that misses or misnames a key fails the strict load.

Depth Anything (v1 and v2 share the layout): a DINOv2 ViT under `pretrained.` (timm-style blocks with a
fused qkv and layer scales `ls1`/`ls2`) and the DPT head under `depth_head.` (`projects`, `resize_layers`
0, 1 and 3, `scratch.layerK_rn`, `scratch.refinenetK` with `out_conv` and two `resConfUnit`s,
`scratch.output_conv1`, `scratch.output_conv2.{0,2}`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

# (width, blocks, neck widths, fusion width) of the real files, and of the tiny ones written here
VIT_SIZES = {
    "vits": (384, 12, (48, 96, 192, 384), 64),
    "vitb": (768, 12, (96, 192, 384, 768), 128),
    "vitl": (1024, 24, (256, 512, 1024, 1024), 256),
    "tiny": (128, 8, (8, 16, 32, 32), 16),
}
GRID, PATCH = 37, 14  # 518 / 14 positions a side, as trained


def depth_anything_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every key of an original Depth Anything state dict of ViT size `size`, with its shape."""
    c, blocks, neck, f = VIT_SIZES[size]
    s: dict[str, tuple[int, ...]] = {
        "pretrained.cls_token": (1, 1, c),
        "pretrained.mask_token": (1, c),
        "pretrained.pos_embed": (1, GRID * GRID + 1, c),
        "pretrained.patch_embed.proj.weight": (c, 3, PATCH, PATCH),
        "pretrained.patch_embed.proj.bias": (c,),
        "pretrained.norm.weight": (c,),
        "pretrained.norm.bias": (c,),
    }
    for i in range(blocks):
        b = f"pretrained.blocks.{i}."
        s.update({
            b + "norm1.weight": (c,), b + "norm1.bias": (c,),
            b + "attn.qkv.weight": (3 * c, c), b + "attn.qkv.bias": (3 * c,),
            b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
            b + "ls1.gamma": (c,),
            b + "norm2.weight": (c,), b + "norm2.bias": (c,),
            b + "mlp.fc1.weight": (4 * c, c), b + "mlp.fc1.bias": (4 * c,),
            b + "mlp.fc2.weight": (c, 4 * c), b + "mlp.fc2.bias": (c,),
            b + "ls2.gamma": (c,),
        })  # fmt: skip
    h = "depth_head."
    for i, n in enumerate(neck):
        s[f"{h}projects.{i}.weight"], s[f"{h}projects.{i}.bias"] = (n, c, 1, 1), (n,)
        s[f"{h}scratch.layer{i + 1}_rn.weight"] = (f, n, 3, 3)
    for i, k in ((0, 4), (1, 2), (3, 3)):  # two transposed convs (x4, x2) and a stride-2 conv
        s[f"{h}resize_layers.{i}.weight"], s[f"{h}resize_layers.{i}.bias"] = (
            (neck[i], neck[i], k, k),
            (neck[i],),
        )
    for k in range(1, 5):
        r = f"{h}scratch.refinenet{k}."
        s[r + "out_conv.weight"], s[r + "out_conv.bias"] = (f, f, 1, 1), (f,)
        for unit in (1, 2):
            for conv in (1, 2):
                s[f"{r}resConfUnit{unit}.conv{conv}.weight"] = (f, f, 3, 3)
                s[f"{r}resConfUnit{unit}.conv{conv}.bias"] = (f,)
    s[f"{h}scratch.output_conv1.weight"], s[f"{h}scratch.output_conv1.bias"] = (f // 2, f, 3, 3), (f // 2,)
    s[f"{h}scratch.output_conv2.0.weight"], s[f"{h}scratch.output_conv2.0.bias"] = (32, f // 2, 3, 3), (32,)
    s[f"{h}scratch.output_conv2.2.weight"], s[f"{h}scratch.output_conv2.2.bias"] = (1, 32, 1, 1), (1,)
    return s


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights scaled by fan-in (so activations stay in range through many layers); norms near 1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            t = 1 + 0.1 * t
        elif key.endswith("gamma"):
            t = 0.1 + 0.05 * t
        elif len(shape) >= 2 and not key.endswith(("pos_embed", "cls_token", "mask_token")):
            t = t / math.prod(shape[1:]) ** 0.5  # fan-in (a transposed conv's in == out here)
        else:
            t = 0.1 * t
        out[key] = t
    return out


def write_depth_anything(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Tiny depth_anything_vitl14.pth (a weights-only pickle) and depth_anything_v2_vitl.safetensors
    (another seed) in `folder`, as sd-webui-controlnet names them: {file name: state dict}."""
    folder.mkdir(parents=True, exist_ok=True)
    v1 = random_state_dict(depth_anything_shapes("tiny"), seed=5)
    torch.save(v1, folder / "depth_anything_vitl14.pth")
    v2 = random_state_dict(depth_anything_shapes("tiny"), seed=6)
    save_file(v2, str(folder / "depth_anything_v2_vitl.safetensors"))
    return {"depth_anything_vitl14.pth": v1, "depth_anything_v2_vitl.safetensors": v2}
