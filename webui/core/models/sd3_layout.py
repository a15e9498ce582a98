"""SD3 / SD3.5 MMDiT weights: Stability's original layout <-> diffusers' SD3Transformer2DModel names.

Stability's files keep the transformer under `model.diffusion_model.` with fused `qkv` projections,
`x_block` (image) and `context_block` (text) halves per joint block, `ln_q`/`ln_k` RMS norms (SD3.5),
and `attn2` in the first blocks of SD3.5 Medium (MMDiT-X). The last block only reads the text, so its
context half has no output projection or MLP, and its modulation, like the final layer's, stores
(shift, scale) where diffusers reads (scale, shift). diffusers' single-file converter reads these files
at any size; this module writes them (fixtures) and sizes a config from their tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from webui.core.models.fused_layout import Fused, depth, fused_linear, linear
from webui.core.models.fused_layout import from_original as _from_original
from webui.core.models.fused_layout import to_original as _to_original


def _attention(o: str, d: str, qkv: list[str], norms: tuple[str, str] | None) -> list[Fused]:
    out = fused_linear(f"{o}.qkv", qkv)
    if norms is not None:
        out += [
            Fused(f"{o}.ln_q.weight", (f"{norms[0]}.weight",)),
            Fused(f"{o}.ln_k.weight", (f"{norms[1]}.weight",)),
        ]
    return out


def _block(i: int, last: bool, qk_norm: bool, dual: bool) -> list[Fused]:
    o, d = f"joint_blocks.{i}", f"transformer_blocks.{i}"
    x, c = f"{o}.x_block", f"{o}.context_block"
    out = [
        *linear(f"{x}.adaLN_modulation.1", f"{d}.norm1.linear"),
        *linear(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear", swap=last),
        *_attention(f"{x}.attn", d, [f"{d}.attn.to_{q}" for q in "qkv"],
                    (f"{d}.attn.norm_q", f"{d}.attn.norm_k") if qk_norm else None),
        *_attention(f"{c}.attn", d, [f"{d}.attn.add_{q}_proj" for q in "qkv"],
                    (f"{d}.attn.norm_added_q", f"{d}.attn.norm_added_k") if qk_norm else None),
        *linear(f"{x}.attn.proj", f"{d}.attn.to_out.0"),
        *linear(f"{x}.mlp.fc1", f"{d}.ff.net.0.proj"),
        *linear(f"{x}.mlp.fc2", f"{d}.ff.net.2"),
    ]  # fmt: skip
    if not last:
        out += linear(f"{c}.attn.proj", f"{d}.attn.to_add_out")
        out += linear(f"{c}.mlp.fc1", f"{d}.ff_context.net.0.proj") + linear(
            f"{c}.mlp.fc2", f"{d}.ff_context.net.2"
        )
    if dual:
        norms = (f"{d}.attn2.norm_q", f"{d}.attn2.norm_k") if qk_norm else None
        out += _attention(f"{x}.attn2", d, [f"{d}.attn2.to_{q}" for q in "qkv"], norms)
        out += linear(f"{x}.attn2.proj", f"{d}.attn2.to_out.0")
    return out


def rules(layers: int, qk_norm: bool, dual_layers: tuple[int, ...] = ()) -> list[Fused]:
    """Every tensor of an MMDiT of this depth, original name -> diffusers parts."""
    out = [
        Fused("pos_embed", ("pos_embed.pos_embed",)),
        *linear("x_embedder.proj", "pos_embed.proj"),
        *linear("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
        *linear("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
        *linear("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
        *linear("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
        *linear("context_embedder", "context_embedder"),
    ]
    for i in range(layers):
        out += _block(i, i == layers - 1, qk_norm, i in dual_layers)
    return (
        out
        + linear("final_layer.linear", "proj_out")
        + linear("final_layer.adaLN_modulation.1", "norm_out.linear", swap=True)
    )


def module_rules(transformer: Any) -> list[Fused]:
    """The original names of a loaded SD3Transformer2DModel's tensors (what kohya LoRAs are keyed by)."""
    c = transformer.config
    return rules(c.num_layers, c.qk_norm is not None, tuple(c.dual_attention_layers or ()))


def to_original(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers SD3Transformer2DModel weights -> Stability's names (no prefix)."""
    dual = tuple(sorted({int(k.split(".")[1]) for k in state_dict if ".attn2." in k}))
    found = rules(
        depth(state_dict, "transformer_blocks."),
        "transformer_blocks.0.attn.norm_q.weight" in state_dict,
        dual,
    )
    return _to_original(found, state_dict, "SD3 transformer")


def from_original(checkpoint: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Stability's MMDiT weights (under `prefix`) -> diffusers names."""
    sd = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if "x_embedder.proj.weight" not in sd:
        raise ValueError(f"not an SD3 transformer: no {prefix}x_embedder.proj.weight")
    dual = tuple(sorted({int(k.split(".")[1]) for k in sd if ".x_block.attn2." in k}))
    found = rules(depth(sd, "joint_blocks."), "joint_blocks.0.x_block.attn.ln_q.weight" in sd, dual)
    return _from_original(found, sd, lambda rule, t: [t.shape[0] // 3] * 3, "SD3 transformer")
