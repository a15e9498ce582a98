"""Configs for SD3 / Flux parts, sized from their tensors (shapes only; nothing is loaded).

What shapes cannot tell comes from the families' conventions, which every released model follows:
SD3 MMDiT heads are 64 wide unless q/k norms say otherwise, CLIP-L uses quick_gelu and CLIP-G gelu,
T5 v1.1 is gated-gelu. So the official models get their official configs and the tiny fixtures load
through the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from webui.core.models.fused_layout import depth
from webui.core.models.infer import ShapeError, clip_config

Shapes = Mapping[str, tuple[int, ...]]


def _need(shapes: Shapes, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ShapeError(f"{what}: missing tensor {key!r}")
    return shapes[key]


def sd3_transformer_config(shapes: Shapes, prefix: str) -> dict[str, Any]:
    """SD3Transformer2DModel config of Stability-layout MMDiT weights under `prefix`."""
    sub = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
    inner, in_channels, patch, _ = _need(sub, "x_embedder.proj.weight", "SD3 transformer")
    norm = sub.get("joint_blocks.0.x_block.attn.ln_q.weight")
    head_dim = norm[0] if norm is not None else inner // max(1, inner // 64)
    max_pos = math.isqrt(_need(sub, "pos_embed", "SD3 transformer")[1])
    caption, joint = _need(sub, "context_embedder.weight", "SD3 transformer")
    cfg: dict[str, Any] = {
        "sample_size": min(128, max_pos),
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": _need(sub, "final_layer.linear.weight", "SD3 transformer")[0] // (patch * patch),
        "num_layers": depth(sub, "joint_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": joint,
        "caption_projection_dim": caption,
        "pooled_projection_dim": _need(sub, "y_embedder.mlp.0.weight", "SD3 transformer")[1],
        "pos_embed_max_size": max_pos,
    }
    if norm is not None:
        cfg["qk_norm"] = "rms_norm"
    dual = sorted({int(k.split(".")[1]) for k in sub if ".x_block.attn2." in k})
    if dual:
        cfg["dual_attention_layers"] = tuple(dual)
    return cfg


def t5_config(shapes: Shapes, prefix: str) -> dict[str, Any]:
    """T5Config values of a T5 v1.1 encoder under `prefix` (`shared.weight`, `encoder.block.N...`)."""
    vocab, width = _need(shapes, prefix + "shared.weight", "T5 text encoder")
    q = _need(shapes, prefix + "encoder.block.0.layer.0.SelfAttention.q.weight", "T5 text encoder")
    bias = _need(
        shapes,
        prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "T5 text encoder",
    )
    heads = bias[1]
    return {
        "vocab_size": vocab,
        "d_model": width,
        "d_kv": q[0] // heads,
        "num_heads": heads,
        "d_ff": _need(
            shapes, prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "T5 text encoder"
        )[0],
        "num_layers": depth(
            {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}, "encoder.block."
        ),
        "relative_attention_num_buckets": bias[0],
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": False,
    }


def clip_text_config(shapes: Shapes, prefix: str, act: str) -> dict[str, Any]:
    """CLIPTextConfig values of a Hugging Face layout CLIP (under `prefix`, `text_model.` included)."""
    base: dict[str, Any] = {
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    }
    cfg = clip_config(shapes, base, prefix)
    projection = shapes.get(prefix.removesuffix("text_model.") + "text_projection.weight")
    cfg["projection_dim"] = projection[0] if projection is not None else cfg["hidden_size"]
    return cfg
