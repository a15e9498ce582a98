"""Flux.1 transformer weights: Black Forest Labs' original layout <-> diffusers' FluxTransformer2DModel.

BFL's files (and the `model.diffusion_model.` part of ComfyUI/Forge all-in-one files) fuse what
diffusers keeps apart: a double block's `img_attn.qkv` is diffusers' to_q, to_k and to_v stacked on
dim 0, a single block's `linear1` is q, k, v and the MLP input, and the final layer's modulation stores
(shift, scale) where diffusers reads (scale, shift). RMS-norm weights are `.scale` there, `.weight` here.

diffusers' own converter assumes the full-size width (3072); this mapping is sized from the tensors, so
the same code loads real files and the tiny test fixtures (a test checks it against diffusers' converter
at the real width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from webui.core.models.fused_layout import Fused, depth, fused_linear, linear
from webui.core.models.fused_layout import from_original as _from_original
from webui.core.models.fused_layout import to_original as _to_original


def _norms(original: str, diffusers: str) -> list[Fused]:
    return [
        Fused(f"{original}.query_norm.scale", (f"{diffusers}q.weight",)),
        Fused(f"{original}.key_norm.scale", (f"{diffusers}k.weight",)),
    ]


def _double(i: int) -> list[Fused]:
    o, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
    return [
        *linear(f"{o}.img_mod.lin", f"{d}.norm1.linear"),
        *linear(f"{o}.txt_mod.lin", f"{d}.norm1_context.linear"),
        *fused_linear(f"{o}.img_attn.qkv", [f"{d}.attn.to_{x}" for x in "qkv"]),
        *fused_linear(f"{o}.txt_attn.qkv", [f"{d}.attn.add_{x}_proj" for x in "qkv"]),
        *_norms(f"{o}.img_attn.norm", f"{d}.attn.norm_"),
        *_norms(f"{o}.txt_attn.norm", f"{d}.attn.norm_added_"),
        *linear(f"{o}.img_attn.proj", f"{d}.attn.to_out.0"),
        *linear(f"{o}.txt_attn.proj", f"{d}.attn.to_add_out"),
        *linear(f"{o}.img_mlp.0", f"{d}.ff.net.0.proj"),
        *linear(f"{o}.img_mlp.2", f"{d}.ff.net.2"),
        *linear(f"{o}.txt_mlp.0", f"{d}.ff_context.net.0.proj"),
        *linear(f"{o}.txt_mlp.2", f"{d}.ff_context.net.2"),
    ]


def _single(i: int) -> list[Fused]:
    o, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
    return [
        *fused_linear(
            f"{o}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"]
        ),
        *linear(f"{o}.linear2", f"{d}.proj_out"),
        *linear(f"{o}.modulation.lin", f"{d}.norm.linear"),
        *_norms(f"{o}.norm", f"{d}.attn.norm_"),
    ]


def rules(double_blocks: int, single_blocks: int, guidance: bool) -> list[Fused]:
    """Every tensor of a Flux transformer of this depth, original name -> diffusers parts."""
    embed = {"time_in": "timestep_embedder", "vector_in": "text_embedder"}
    if guidance:
        embed["guidance_in"] = "guidance_embedder"
    out: list[Fused] = []
    for original, diffusers in embed.items():
        out += linear(f"{original}.in_layer", f"time_text_embed.{diffusers}.linear_1")
        out += linear(f"{original}.out_layer", f"time_text_embed.{diffusers}.linear_2")
    out += linear("img_in", "x_embedder") + linear("txt_in", "context_embedder")
    for i in range(double_blocks):
        out += _double(i)
    for i in range(single_blocks):
        out += _single(i)
    return (
        out
        + linear("final_layer.linear", "proj_out")
        + linear("final_layer.adaLN_modulation.1", "norm_out.linear", swap=True)
    )


def module_rules(transformer: Any) -> list[Fused]:
    """The original names of a loaded FluxTransformer2DModel's tensors (what kohya LoRAs are keyed by)."""
    c = transformer.config
    return rules(c.num_layers, c.num_single_layers, bool(c.guidance_embeds))


def to_original(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers FluxTransformer2DModel weights -> BFL's original names (no prefix)."""
    found = rules(
        depth(state_dict, "transformer_blocks."),
        depth(state_dict, "single_transformer_blocks."),
        "time_text_embed.guidance_embedder.linear_1.weight" in state_dict,
    )
    return _to_original(found, state_dict, "Flux transformer")


def _unprefixed(checkpoint: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    sd = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if "img_in.weight" not in sd:
        raise ValueError(f"not a Flux transformer: no {prefix}img_in.weight")
    return sd


def from_original(checkpoint: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """BFL's original Flux transformer weights (under `prefix`) -> diffusers names.

    q, k and v are each the model width (`img_in`'s output size); the rest of a single block's
    `linear1` is its MLP input.
    """
    sd = _unprefixed(checkpoint, prefix)
    width = sd["img_in.weight"].shape[0]
    found = rules(
        depth(sd, "double_blocks."), depth(sd, "single_blocks."), "guidance_in.in_layer.weight" in sd
    )

    def sizes(rule: Fused, t: Tensor) -> list[int]:
        return [width] * (len(rule.parts) - 1) + [t.shape[0] - width * (len(rule.parts) - 1)]

    return _from_original(found, sd, sizes, "Flux transformer")


def transformer_config(shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> dict[str, Any]:
    """The FluxTransformer2DModel config of BFL-layout weights, sized from their shapes."""
    sd = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
    if "img_in.weight" not in sd:
        raise ValueError(f"not a Flux transformer: no {prefix}img_in.weight")
    width, in_channels = sd["img_in.weight"]
    head_dim = sd["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": sd["final_layer.linear.weight"][0],
        "num_layers": depth(sd, "double_blocks."),
        "num_single_layers": depth(sd, "single_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": width // head_dim,
        "joint_attention_dim": sd["txt_in.weight"][1],
        "pooled_projection_dim": sd["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in sd,
        # RoPE over (time, height, width): Flux splits its 128-wide heads 16/56/56; same proportions
        "axes_dims_rope": (head_dim // 8, (head_dim - head_dim // 8) // 2, (head_dim - head_dim // 8) // 2),
    }
