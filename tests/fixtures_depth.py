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


# MiDaS DPT-Hybrid: (ViT width, blocks, ResNet stem width, stage widths, stage blocks, DPT widths, fusion)
MIDAS_SIZES = {
    "real": (768, 12, 64, (256, 512, 1024), (3, 4, 9), (256, 512, 768, 768), 256),
    "tiny": (128, 4, 32, (128, 128, 256), (1, 2, 1), (128, 128, 32, 32), 16),  # GroupNorm: 32 groups
}


def midas_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every key of the original dpt_hybrid-midas state dict (timm's ViT-hybrid under `pretrained.model`,
    its ResNet-V2 stem at `patch_embed.backbone`, DPT's `act_postprocess` and `scratch`), with shapes."""
    c, blocks, stem, widths, depths, neck, f = MIDAS_SIZES[size]
    v, b = "pretrained.model.", "pretrained.model.patch_embed.backbone."
    s: dict[str, tuple[int, ...]] = {
        v + "cls_token": (1, 1, c), v + "pos_embed": (1, 24 * 24 + 1, c),
        b + "stem.conv.weight": (stem, 3, 7, 7), b + "stem.norm.weight": (stem,),
        b + "stem.norm.bias": (stem,), v + "patch_embed.proj.weight": (c, widths[2], 1, 1),
        v + "patch_embed.proj.bias": (c,), v + "norm.weight": (c,), v + "norm.bias": (c,),
        v + "head.weight": (1000, c), v + "head.bias": (1000,),  # timm's classifier, unused
    }  # fmt: skip
    cin = stem
    for si, (out, n) in enumerate(zip(widths, depths, strict=True)):
        mid = out // 4
        for j in range(n):
            p = f"{b}stages.{si}.blocks.{j}."
            if j == 0:
                s[p + "downsample.conv.weight"] = (out, cin, 1, 1)
                s[p + "downsample.norm.weight"], s[p + "downsample.norm.bias"] = (out,), (out,)
            s[p + "conv1.weight"] = (mid, cin if j == 0 else out, 1, 1)
            s[p + "conv2.weight"] = (mid, mid, 3, 3)
            s[p + "conv3.weight"] = (out, mid, 1, 1)
            for k, width in (("norm1", mid), ("norm2", mid), ("norm3", out)):
                s[f"{p}{k}.weight"], s[f"{p}{k}.bias"] = (width,), (width,)
        cin = out
    for i in range(blocks):
        p = f"{v}blocks.{i}."
        s.update({
            p + "norm1.weight": (c,), p + "norm1.bias": (c,),
            p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
            p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
            p + "norm2.weight": (c,), p + "norm2.bias": (c,),
            p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
            p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
        })  # fmt: skip
    for k in (3, 4):  # the two ViT taps: readout projection (cls token concatenated), 1x1 conv, resize
        p = f"pretrained.act_postprocess{k}."
        s[p + "0.project.0.weight"], s[p + "0.project.0.bias"] = (c, 2 * c), (c,)
        s[p + "3.weight"], s[p + "3.bias"] = (neck[k - 1], c, 1, 1), (neck[k - 1],)
    s["pretrained.act_postprocess4.4.weight"] = (neck[3], neck[3], 3, 3)
    s["pretrained.act_postprocess4.4.bias"] = (neck[3],)
    for k in range(1, 5):
        s[f"scratch.layer{k}_rn.weight"] = (f, neck[k - 1], 3, 3)
        r = f"scratch.refinenet{k}."
        s[r + "out_conv.weight"], s[r + "out_conv.bias"] = (f, f, 1, 1), (f,)
        for unit in (1, 2):
            for conv in (1, 2):
                s[f"{r}resConfUnit{unit}.conv{conv}.weight"] = (f, f, 3, 3)
                s[f"{r}resConfUnit{unit}.conv{conv}.bias"] = (f,)
    for i, shape in ((0, (f // 2, f, 3, 3)), (2, (32, f // 2, 3, 3)), (4, (1, 32, 1, 1))):
        s[f"scratch.output_conv.{i}.weight"], s[f"scratch.output_conv.{i}.bias"] = shape, shape[:1]
    return s


def write_midas(folder: Path) -> dict[str, torch.Tensor]:
    """A tiny dpt_hybrid-midas-501f0c75.pt (a weights-only pickle) in `folder`: its state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = random_state_dict(midas_shapes("tiny"), seed=7)
    torch.save(sd, folder / "dpt_hybrid-midas-501f0c75.pt")
    return sd
