"""diffusers/transformers configs for a checkpoint: the shipped config of its family, sized by its shapes.

Everything a shape tells (channels, layer counts, widths, vocabulary, which levels attend) is read from
the checkpoint; what shapes cannot tell comes from the family's conventions, which hold for every
released model: SD1 UNets use 8 attention heads, SD2/SDXL UNets and every CLIP text encoder use 64-wide
heads, SD1/SDXL-CLIP-L use quick_gelu and OpenCLIP uses gelu. So the real models get exactly their
official configs, and any smaller model of the same family (our test fixtures) loads through the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from webui.core.models.detect import UNET, Detected, Shapes


class ShapeError(ValueError):
    """The checkpoint's tensors do not form a model of its family."""


def _need(shapes: Shapes, key: str) -> tuple[int, ...]:
    try:
        return shapes[key]
    except KeyError:
        raise ShapeError(f"missing tensor {key!r}") from None


def _count(shapes: Shapes, pattern: str) -> int:
    """How many distinct values of the `(\\d+)` group in `pattern` occur among the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.fullmatch(k))})


def _heads(channels: int) -> int:
    return max(1, channels // 64)


def unet_config(
    shapes: Shapes, base: Mapping[str, Any], det: Detected, te2_proj: int | None
) -> dict[str, Any]:
    p = UNET
    cfg = dict(base)
    conv_in = _need(shapes, p + "input_blocks.0.0.weight")
    cfg["in_channels"] = conv_in[1]
    cfg["out_channels"] = _need(shapes, p + "out.2.weight")[0]
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (channels, transformer depth) per resnet
    i = 1
    while True:
        blk = f"{p}input_blocks.{i}."
        if blk + "0.op.weight" in shapes:
            levels.append([])
        elif blk + "0.in_layers.0.weight" in shapes:
            ch = _need(shapes, blk + "0.out_layers.3.weight")[0]
            depth = _count(shapes, re.escape(blk) + r"1\.transformer_blocks\.(\d+)\.attn1\.to_q\.weight")
            levels[-1].append((ch, depth))
        else:
            break
        i += 1
    per_level = {len(lv) for lv in levels}
    if len(per_level) != 1 or 0 in per_level:
        raise ShapeError(f"UNet levels have unequal resnet counts {sorted(per_level)}")
    channels = [lv[0][0] for lv in levels]
    attends = [lv[0][1] > 0 for lv in levels]
    cfg["block_out_channels"] = channels
    cfg["layers_per_block"] = per_level.pop()
    cfg["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends]
    cfg["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)]
    # diffusers sizes the middle block from the last entry; levels without attention take its depth
    mid = _count(shapes, re.escape(p) + r"middle_block\.1\.transformer_blocks\.(\d+)\.attn1\.to_q\.weight")
    if attends[-1] and mid and levels[-1][0][1] != mid:
        raise ShapeError(f"middle block depth {mid} differs from the last level's {levels[-1][0][1]}")
    cfg["transformer_layers_per_block"] = [lv[0][1] or mid or 1 for lv in levels]
    attn = next((j for j, a in enumerate(attends) if a), None)
    if attn is None:
        raise ShapeError("UNet has no cross-attention level")
    first = 1 + attn * (cfg["layers_per_block"] + 1)
    blk = f"{p}input_blocks.{first}.1."
    cfg["cross_attention_dim"] = _need(shapes, blk + "transformer_blocks.0.attn2.to_k.weight")[1]
    cfg["use_linear_projection"] = len(_need(shapes, blk + "proj_in.weight")) == 2
    fixed_heads = det.arch.unet_head_dim
    cfg["attention_head_dim"] = fixed_heads if fixed_heads is not None else [_heads(c) for c in channels]
    label = shapes.get(p + "label_emb.0.0.weight")
    if label is not None:
        if te2_proj is None:
            raise ShapeError("UNet has size conditioning but no pooled text projection was found")
        n_ids = det.arch.time_id_count
        if n_ids == 0:
            raise ShapeError(f"UNet has size conditioning, which {det.label} models do not have")
        cfg["projection_class_embeddings_input_dim"] = label[1]
        cfg["addition_time_embed_dim"] = (label[1] - te2_proj) // n_ids
    return cfg


def vae_config(shapes: Shapes, base: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    cfg = dict(base)
    n = _count(shapes, re.escape(prefix) + r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    if n == 0:
        raise ShapeError("no VAE encoder blocks found")
    cfg["block_out_channels"] = [
        _need(shapes, f"{prefix}encoder.down.{i}.block.0.conv2.weight")[0] for i in range(n)
    ]
    cfg["layers_per_block"] = _count(
        shapes, re.escape(prefix) + r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"
    )
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * n
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * n
    cfg["in_channels"] = _need(shapes, prefix + "encoder.conv_in.weight")[1]
    cfg["out_channels"] = _need(shapes, prefix + "decoder.conv_out.weight")[0]
    cfg["latent_channels"] = _need(shapes, prefix + "encoder.conv_out.weight")[0] // 2
    return cfg


def clip_config(shapes: Shapes, base: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A CLIP text encoder stored in Hugging Face layout (SD1, SDXL's first encoder)."""
    cfg = dict(base)
    vocab, width = _need(shapes, prefix + "embeddings.token_embedding.weight")
    cfg.update(
        vocab_size=vocab,
        hidden_size=width,
        num_attention_heads=_heads(width),
        max_position_embeddings=_need(shapes, prefix + "embeddings.position_embedding.weight")[0],
        num_hidden_layers=_count(
            shapes, re.escape(prefix) + r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.weight"
        ),
        intermediate_size=_need(shapes, prefix + "encoder.layers.0.mlp.fc1.weight")[0],
    )
    return cfg


def openclip_config(
    shapes: Shapes, base: Mapping[str, Any], prefix: str, penultimate: bool
) -> dict[str, Any]:
    """An OpenCLIP text encoder (SD2, SDXL's second encoder) as a transformers CLIP config.

    SD2 conditions on the penultimate block, so its transformers model has one layer fewer than the
    checkpoint (`penultimate=True`); SDXL keeps every block.
    """
    cfg = dict(base)
    vocab, width = _need(shapes, prefix + "token_embedding.weight")
    blocks = _count(shapes, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight")
    if blocks < (2 if penultimate else 1):
        raise ShapeError("OpenCLIP text encoder has too few blocks")
    cfg.update(
        vocab_size=vocab,
        hidden_size=width,
        num_attention_heads=_heads(width),
        max_position_embeddings=_need(shapes, prefix + "positional_embedding")[0],
        num_hidden_layers=blocks - 1 if penultimate else blocks,
        intermediate_size=_need(shapes, prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0],
    )
    proj = shapes.get(prefix + "text_projection")
    if proj is not None and not penultimate:
        cfg["projection_dim"] = proj[1]
    return cfg


def text_encoder_prefixes(det: Detected) -> dict[str, tuple[str, str]]:
    """component -> (layout, key prefix) for the family's text encoders."""
    return {e.component: (e.layout, e.key_prefix) for e in det.arch.text.encoders}


def text_config(shapes: Shapes, base: Mapping[str, Any], layout: str, prefix: str) -> dict[str, Any]:
    if layout == "clip":
        return clip_config(shapes, base, prefix)
    return openclip_config(shapes, base, prefix, penultimate=layout == "openclip-penultimate")
