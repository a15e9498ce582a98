"""Text encoders between Hugging Face (transformers) and single-file (LDM) layouts, both directions.

Two layouts occur in single files:

- CLIP (SD1 `cond_stage_model.transformer.text_model.`, SDXL's first encoder
  `conditioner.embedders.0.transformer.text_model.`): the Hugging Face names under a prefix. The
  prefix ends with `text_model.` even though transformers >= 5.6 no longer has that level in
  `CLIPTextModel.state_dict()`: single files keep it, and diffusers recognises SD1 by it.
- OpenCLIP (SD2 `cond_stage_model.model.`, SDXL's second encoder `conditioner.embedders.1.model.`, the
  SDXL refiner's `conditioner.embedders.0.model.`): fused q/k/v (`attn.in_proj_weight` = cat(q, k, v)),
  other layer names, and `text_projection` stored as (width, projection), the transpose of the
  Hugging Face Linear weight.

SD2 conditions on OpenCLIP's penultimate block, so its Hugging Face model has one layer fewer than the
file has blocks: `openclip_from_ldm(..., num_layers=N)` reads the first N blocks and ignores the rest.

Hugging Face keys come out flat, as `CLIPTextModel.load_state_dict` wants them in transformers >= 5.6
(`encoder.layers.0.self_attn.q_proj.weight`), plus `text_projection.weight` for a model with a
projection; `CLIPTextModelWithProjection` still wants `text_model.` before all keys but that one
(`with_text_model_level` adds it). Inputs may use either form; `position_ids` buffers are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

_HF_WRAPPER = "text_model."
_POSITION_IDS = "embeddings.position_ids"
_PROJECTION = "text_projection.weight"
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
# Hugging Face name -> OpenCLIP name, outside the encoder layers
_OPENCLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
# Hugging Face CLIPEncoderLayer name -> OpenCLIP ResidualAttentionBlock name (q/k/v are fused apart)
_OPENCLIP_LAYER = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_QKV = ("q_proj", "k_proj", "v_proj")
# OpenCLIP keys outside the text tower that some files carry and no text encoder needs
_OPENCLIP_IGNORED = ("logit_scale", "attn_mask", "visual.")


class TextLayoutError(ValueError):
    """A text encoder's keys do not fit the layout they are read or written in."""


def _flat(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face keys without the `text_model.` level and without position_ids."""
    flat = {k.removeprefix(_HF_WRAPPER): v for k, v in state_dict.items()}
    flat.pop(_POSITION_IDS, None)
    return flat


def _under(checkpoint: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    found = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    if not found:
        raise TextLayoutError(f"no text encoder keys under {prefix!r}")
    return found


def with_text_model_level(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Flat keys as CLIPTextModelWithProjection wants them: `text_model.` before all but the projection."""
    return {k if k == _PROJECTION else _HF_WRAPPER + k: v for k, v in state_dict.items()}


# ---- CLIP (Hugging Face names under a prefix) -------------------------------------------------------


def clip_to_ldm(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A CLIPTextModel state dict as single-file keys; `prefix` ends with `text_model.`."""
    flat = _flat(state_dict)
    if _PROJECTION in flat:
        raise TextLayoutError("a CLIP-layout text encoder has no text_projection (use the OpenCLIP layout)")
    return {prefix + k: v for k, v in flat.items()}


def clip_from_ldm(checkpoint: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The CLIPTextModel state dict stored under `prefix` (which ends with `text_model.`)."""
    return _flat(_under(checkpoint, prefix))


# ---- OpenCLIP ---------------------------------------------------------------------------------------


def _layer_to_openclip(layer: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One CLIPEncoderLayer state dict (relative keys) as an OpenCLIP block (relative keys)."""
    out: dict[str, Tensor] = {}
    for kind, fused in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
        try:
            parts = [layer[f"self_attn.{p}.{kind}"] for p in _QKV]
        except KeyError as e:
            raise TextLayoutError(f"encoder layer misses {e.args[0]!r}") from None
        out[f"attn.{fused}"] = torch.cat(parts, dim=0)
    for key, tensor in layer.items():
        if key.startswith(tuple(f"self_attn.{p}." for p in _QKV)):
            continue
        try:
            out[_OPENCLIP_LAYER[key]] = tensor
        except KeyError:
            raise TextLayoutError(f"unknown encoder layer key {key!r}") from None
    return out


def _layers(flat: Mapping[str, Tensor]) -> tuple[dict[int, dict[str, Tensor]], dict[str, Tensor]]:
    """Split Hugging Face keys into {layer index: relative layer keys} and the rest."""
    layers: dict[int, dict[str, Tensor]] = {}
    rest: dict[str, Tensor] = {}
    for key, tensor in flat.items():
        m = _LAYER.fullmatch(key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
        else:
            rest[key] = tensor
    if sorted(layers) != list(range(len(layers))):
        raise TextLayoutError(f"encoder layers are not numbered 0..n-1: {sorted(layers)}")
    return layers, rest


def openclip_to_ldm(
    state_dict: Mapping[str, Tensor], prefix: str, extra_final_block: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """A CLIPTextModel(WithProjection) state dict in OpenCLIP layout under `prefix`.

    `extra_final_block`, a CLIPEncoderLayer state dict, is written as one more block after the model's
    own: an SD2 file has the block its Hugging Face model leaves out.
    """
    layers, rest = _layers(_flat(state_dict))
    if extra_final_block is not None:
        layers[len(layers)] = dict(extra_final_block)
    out: dict[str, Tensor] = {}
    for key, tensor in rest.items():
        if key == _PROJECTION:
            out[prefix + "text_projection"] = tensor.T.contiguous()
        elif key in _OPENCLIP_TOP:
            out[prefix + _OPENCLIP_TOP[key]] = tensor
        else:
            raise TextLayoutError(f"unknown text encoder key {key!r}")
    for i, layer in layers.items():
        for key, tensor in _layer_to_openclip(layer).items():
            out[f"{prefix}transformer.resblocks.{i}.{key}"] = tensor
    return out


def _layer_from_openclip(block: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One OpenCLIP block (relative keys) as a CLIPEncoderLayer state dict (relative keys)."""
    reverse = {v: k for k, v in _OPENCLIP_LAYER.items()}
    out: dict[str, Tensor] = {}
    for key, tensor in block.items():
        if key in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if key.endswith("weight") else "bias"
            if tensor.shape[0] % 3:
                raise TextLayoutError(f"{key} has {tensor.shape[0]} rows, not 3 x width")
            for name, part in zip(_QKV, tensor.chunk(3, dim=0), strict=True):
                out[f"self_attn.{name}.{kind}"] = part.clone()
        elif key in reverse:
            out[reverse[key]] = tensor
        else:
            raise TextLayoutError(f"unknown OpenCLIP block key {key!r}")
    return out


def openclip_from_ldm(
    checkpoint: Mapping[str, Tensor], prefix: str, num_layers: int, *, with_projection: bool | None = None
) -> dict[str, Tensor]:
    """The Hugging Face state dict of the OpenCLIP text encoder stored under `prefix`.

    Reads the first `num_layers` blocks and ignores any after them (SD2: the file has one more). Keys
    are flat, as CLIPTextModel wants them; `text_projection.weight` (as CLIPTextModelWithProjection
    wants it, which also puts `text_model.` before the other keys) is included when `with_projection`,
    or by default when the file has a projection and the model reads its last block: a projection
    applies to the final block's output, so a penultimate-layer model (SD2) has no use for it.
    """
    found = _under(checkpoint, prefix)
    blocks: dict[int, dict[str, Tensor]] = {}
    top: dict[str, Tensor] = {}
    for key, tensor in found.items():
        m = _RESBLOCK.fullmatch(key)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
        elif not key.startswith(_OPENCLIP_IGNORED):
            top[key] = tensor
    if any(i not in blocks for i in range(num_layers)):
        raise TextLayoutError(f"{prefix} has {len(blocks)} blocks, the model needs {num_layers}")
    projection = top.pop("text_projection", None)
    if with_projection is None:
        with_projection = projection is not None and num_layers == len(blocks)
    reverse_top = {v: k for k, v in _OPENCLIP_TOP.items()}
    out: dict[str, Tensor] = {}
    if with_projection:
        if projection is None:
            raise TextLayoutError(f"no {prefix}text_projection for a text encoder with projection")
        out[_PROJECTION] = projection.T.contiguous()
    for key, tensor in top.items():
        if key not in reverse_top:
            raise TextLayoutError(f"unknown OpenCLIP key {prefix + key!r}")
        out[reverse_top[key]] = tensor
    for i in range(num_layers):
        for key, tensor in _layer_from_openclip(blocks[i]).items():
            out[f"encoder.layers.{i}.{key}"] = tensor
    return out
