"""SD3 / SD3.5 and Flux ControlNets: which kinds are wired, their diffusers config, the base they fit.

Wired (diffusers has the class, the file is its state dict, or a diffusers folder with config.json):

- SD3: `SD3ControlNetModel` as InstantX publishes it (`pos_embed`, `pos_embed_input`, joint blocks,
  `controlnet_blocks`): its outputs go to SD3Transformer2DModel's `block_controlnet_hidden_states`;
- Flux: `FluxControlNetModel` as InstantX publishes it (`controlnet_x_embedder`, double and single blocks,
  `controlnet_blocks`, `controlnet_single_blocks`): to FluxTransformer2DModel's
  `controlnet_block_samples` / `controlnet_single_block_samples`.

- Flux, XLabs' layout (`double_blocks.*` in Black Forest Labs' naming, `input_hint_block.*`,
  `pos_embed_input`, `controlnet_blocks.*`): renamed to a `FluxControlNetModel` with a pixel-space hint
  encoder (`conditioning_embedding_channels=16`, 2x2 patches), as diffusers runs XLabs' ControlNets; its
  few blocks are repeated over the transformer's double blocks (`controlnet_blocks_repeat`).

- Flux Union (`FluxControlNetModel` with a mode embedder, InstantX's and Shakker Labs' Union / Union-Pro):
  the unit's `union_control_type` picks the mode (canny 0, tile 1, depth 2, blur 3, pose 4, gray 5,
  low quality 6, as their model cards number them; sd-webui-controlnet's names for the same types are
  read too).

Recognised and refused by name (layout.foreign_kind): SD3 files with a mode embedder, SD3.5 ControlNets
without their own position embedding (Stability AI's, which borrow the transformer's), SD3 ControlNets
with extra conditioning channels (inpainting's mask).

The config comes from tensor shapes. What the weights do not show is taken from the base model's
transformer config when given (SD3 heads without q/k norms, Flux's rotary axes), else from the real
models (64-wide heads; axes 16, 56, 56). InstantX SD3 ControlNets take zero pooled projections and
latents without the VAE shift (diffusers' `force_zeros_for_pooled_projection`, true unless a folder's
config says otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .layout import ControlNetFileError, not_wired

SD3_CLASS = "SD3ControlNetModel"
FLUX_CLASS = "FluxControlNetModel"
WIRED_KINDS = (
    "SD3ControlNetModel",
    "InstantX (FluxControlNetModel)",
    "InstantX Union (FluxControlNetModel)",
    "FluxControlNetModel",
    "Union (FluxControlNetModel)",
    "XLabs",
)
NO_UNION_TYPE = "Unknown"  # sd-webui-controlnet's default `union_control_type`: none given
UNION_TYPES = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5, "low quality": 6}
_UNION_ALIASES = {  # sd-webui-controlnet's names of the same control types
    "canny / lineart / anime lineart / mlsd": "canny",
    "openpose": "pose",
}
XLABS_HINT_CHANNELS = 16  # XLabs' hint encoder: 3 -> 16 channels, three stride-2 convolutions
_HEAD_WIDTH = 64  # SD3 Medium's head width (no q/k norm to read it from)
_FLUX_AXES = (16, 56, 56)  # FLUX.1's rotary axes


def wired(kind: str) -> bool:
    """Whether a recognised SD3 / Flux kind (layout.foreign_kind) runs in generation."""
    return kind in WIRED_KINDS


def refusal(family: str, kind: str) -> str:
    """Why a recognised but unwired SD3 / Flux ControlNet is refused."""
    return not_wired(family, kind)


def union_type(value: str) -> str | None:
    """The Flux Union control type a unit's `union_control_type` names (a key of UNION_TYPES), None for
    sd-webui-controlnet's "Unknown"; ValueError for a name no Flux Union ControlNet has."""
    name = value.strip().lower()
    if name == NO_UNION_TYPE.lower():
        return None
    name = _UNION_ALIASES.get(name, name)
    if name not in UNION_TYPES:
        raise ValueError(f"union_control_type must be one of {', '.join(UNION_TYPES)}; got {value!r}")
    return name


def a_family(family: str) -> str:
    """ "an SD3", "a Flux": the family with its article."""
    return f"{'an' if family.startswith('S') else 'a'} {family}"


def uses_pixels(model: Any) -> bool:
    """Whether the ControlNet takes the control image itself (XLabs' hint encoder), not its latents."""
    return getattr(model, "input_hint_block", None) is not None


def family_of(model: Any) -> str | None:
    """ "SD3" or "Flux" for a loaded SD3 / Flux ControlNet, else None."""
    name = type(model).__name__
    return "SD3" if name == SD3_CLASS else "Flux" if name == FLUX_CLASS else None


def _count(keys: Iterable[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def config_for(
    sd: Mapping[str, torch.Tensor],
    family: str,
    folder_config: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(class name, config) of an SD3 / Flux ControlNet state dict; a diffusers folder's config.json
    (`folder_config`) is taken as it is (its init arguments). ControlNetFileError for what is not wired."""
    cls = SD3_CLASS if family == "SD3" else FLUX_CLASS
    if folder_config is not None:
        cfg = {k: v for k, v in folder_config.items() if not k.startswith("_")}
    elif family == "Flux" and "input_hint_block.conv_in.weight" in sd:
        cfg = xlabs_config(sd, base)
    else:
        cfg = _sd3_config(sd, base) if family == "SD3" else _flux_config(sd, base)
    if family == "SD3" and cfg.get("use_pos_embed") is False:
        raise ControlNetFileError(
            "an SD3.5 ControlNet that borrows the transformer's position embedding (Stability AI's): "
            "not wired yet; use an InstantX SD3 ControlNet"
        )
    if family == "SD3" and cfg.get("extra_conditioning_channels"):
        raise ControlNetFileError(
            "an SD3 ControlNet that takes extra channels beside the control latents (an inpainting one's "
            "mask): not wired yet"
        )
    if family == "Flux" and cfg.get("num_mode") is not None and cfg["num_mode"] < len(UNION_TYPES):
        raise ControlNetFileError(
            f"a Flux Union ControlNet with {cfg['num_mode']} modes: not one of the known Union ControlNets"
        )
    return cls, cfg


def is_xlabs(sd: Mapping[str, torch.Tensor]) -> bool:
    return "pos_embed_input.weight" in sd and any(k.startswith("double_blocks.") for k in sd)


def _linear(out: dict[str, torch.Tensor], sd: Mapping[str, torch.Tensor], old: str, new: str) -> None:
    for p in ("weight", "bias"):
        if f"{old}.{p}" in sd:
            out[f"{new}.{p}"] = sd[f"{old}.{p}"]


_QKV = {"img": ("to_q", "to_k", "to_v"), "txt": ("add_q_proj", "add_k_proj", "add_v_proj")}


def xlabs_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """XLabs' Flux ControlNet -> diffusers' FluxControlNetModel names. A double block's fused `qkv` is
    to_q, to_k and to_v stacked on dim 0 (the text stream's: add_q/k/v_proj); RMS-norm `.scale` is
    `.weight`; the hint encoder's convolutions 0, 2, ..., 14 are conv_in, blocks 0-5, conv_out."""
    out: dict[str, torch.Tensor] = {}
    embed = {"time_in": "timestep_embedder", "vector_in": "text_embedder", "guidance_in": "guidance_embedder"}
    for old, new in embed.items():
        _linear(out, sd, f"{old}.in_layer", f"time_text_embed.{new}.linear_1")
        _linear(out, sd, f"{old}.out_layer", f"time_text_embed.{new}.linear_2")
    for old, new in (("img_in", "x_embedder"), ("txt_in", "context_embedder")):
        _linear(out, sd, old, new)
    _linear(out, sd, "pos_embed_input", "controlnet_x_embedder")
    hint = ["conv_in", *(f"blocks.{i}" for i in range(6)), "conv_out"]
    for i, name in enumerate(hint):
        _linear(out, sd, f"input_hint_block.{2 * i}", f"input_hint_block.{name}")
    for i in range(_count(sd, r"controlnet_blocks\.(\d+)\.")):
        _linear(out, sd, f"controlnet_blocks.{i}", f"controlnet_blocks.{i}")
    for i in range(_count(sd, r"double_blocks\.(\d+)\.")):
        o, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for old, new in (
            ("img_mod.lin", "norm1.linear"),
            ("txt_mod.lin", "norm1_context.linear"),
            ("img_attn.proj", "attn.to_out.0"),
            ("txt_attn.proj", "attn.to_add_out"),
            ("img_mlp.0", "ff.net.0.proj"),
            ("img_mlp.2", "ff.net.2"),
            ("txt_mlp.0", "ff_context.net.0.proj"),
            ("txt_mlp.2", "ff_context.net.2"),
        ):
            _linear(out, sd, f"{o}.{old}", f"{d}.{new}")
        for stream, names in _QKV.items():
            for p in ("weight", "bias"):
                qkv = sd[f"{o}.{stream}_attn.qkv.{p}"]
                if qkv.shape[0] % 3:
                    raise ControlNetFileError(f"{o}.{stream}_attn.qkv.{p} is not q, k and v stacked")
                for name, part in zip(names, qkv.chunk(3), strict=True):
                    out[f"{d}.attn.{name}.{p}"] = part
            added = "" if stream == "img" else "added_"
            out[f"{d}.attn.norm_{added}q.weight"] = sd[f"{o}.{stream}_attn.norm.query_norm.scale"]
            out[f"{d}.attn.norm_{added}k.weight"] = sd[f"{o}.{stream}_attn.norm.key_norm.scale"]
    return out


def xlabs_config(sd: Mapping[str, torch.Tensor], base: Mapping[str, Any] | None) -> dict[str, Any]:
    """The FluxControlNetModel config of XLabs' weights (already renamed by `xlabs_to_diffusers`)."""
    cfg = _flux_config(sd, base)
    cfg.update(patch_size=2, num_single_layers=0, conditioning_embedding_channels=XLABS_HINT_CHANNELS)
    return cfg


def _sd3_config(sd: Mapping[str, torch.Tensor], base: Mapping[str, Any] | None) -> dict[str, Any]:
    if "pos_embed.proj.weight" not in sd:
        return {"use_pos_embed": False}
    proj = sd["pos_embed_input.proj.weight"]
    inner, cond_channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[-1])
    in_channels = int(sd["pos_embed.proj.weight"].shape[1])
    layers = _count(sd, r"transformer_blocks\.(\d+)\.")
    norm = sd.get("transformer_blocks.0.attn.norm_q.weight")
    if norm is not None:
        head = int(norm.shape[0])
    elif base is not None and base.get("num_attention_heads", 0) * base.get("attention_head_dim", 0) == inner:
        head = int(base["attention_head_dim"])
    else:
        head = min(_HEAD_WIDTH, inner)
    context = sd.get("context_embedder.weight")
    cfg: dict[str, Any] = {
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "num_layers": layers,
        "attention_head_dim": head,
        "num_attention_heads": inner // head,
        "joint_attention_dim": int(context.shape[1]) if context is not None else None,
        "caption_projection_dim": int(context.shape[0]) if context is not None else inner,
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "extra_conditioning_channels": cond_channels - in_channels,
        "dual_attention_layers": tuple(
            i for i in range(layers) if f"transformer_blocks.{i}.attn2.to_q.weight" in sd
        ),
        "qk_norm": None if norm is None else "layer_norm" if _has_bias(sd) else "rms_norm",
    }
    pos = sd.get("pos_embed.pos_embed")
    if pos is not None:
        cfg["pos_embed_max_size"] = round(math.sqrt(int(pos.shape[1])))
    if base is not None and base.get("sample_size") is not None:
        cfg["sample_size"] = base["sample_size"]
    return cfg


def _has_bias(sd: Mapping[str, torch.Tensor]) -> bool:
    return "transformer_blocks.0.attn.norm_q.bias" in sd


def _flux_config(sd: Mapping[str, torch.Tensor], base: Mapping[str, Any] | None) -> dict[str, Any]:
    inner, in_channels = (int(n) for n in sd["x_embedder.weight"].shape)
    layers = _count(sd, r"transformer_blocks\.(\d+)\.")
    single = _count(sd, r"single_transformer_blocks\.(\d+)\.")
    first = "transformer_blocks.0" if layers else "single_transformer_blocks.0"
    head = int(sd[f"{first}.attn.norm_q.weight"].shape[0])
    axes = base.get("axes_dims_rope") if base is not None else None
    mode = sd.get("controlnet_mode_embedder.weight")
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "num_layers": layers,
        "num_single_layers": single,
        "attention_head_dim": head,
        "num_attention_heads": inner // head,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in sd,
        "axes_dims_rope": list(axes) if axes is not None else list(_FLUX_AXES),
        "num_mode": int(mode.shape[0]) if mode is not None else None,
    }


def check_base(
    model: Any, family: str, transformer_config: Mapping[str, Any], base_label: str, name: str
) -> None:
    """ControlNetFileError unless the SD3 / Flux ControlNet `model` can drive the job's transformer
    (`family`: "SD3", "Flux" or another family group, `base_label` the checkpoint's family as shown)."""
    own = family_of(model)
    if own is None or not family.startswith(own):
        raise ControlNetFileError(
            f"{name} is {a_family(str(own))} ControlNet and cannot be used with this {base_label} "
            "checkpoint; pick a ControlNet made for the checkpoint's base model"
        )
    cfg, base = model.config, transformer_config
    inner = cfg.num_attention_heads * cfg.attention_head_dim
    base_inner = base.get("num_attention_heads", 0) * base.get("attention_head_dim", 0)
    pairs = [("width", inner, base_inner), ("in_channels", cfg.in_channels, base.get("in_channels"))]
    pairs += [("text width", cfg.joint_attention_dim, base.get("joint_attention_dim"))]
    pairs += [("pooled width", cfg.pooled_projection_dim, base.get("pooled_projection_dim"))]
    if own == "Flux":
        pairs += [("rotary axes", list(cfg.axes_dims_rope), list(base.get("axes_dims_rope", ())))]
    elif cfg.joint_attention_dim is None:
        pairs = pairs[:2]
    for what, ours, theirs in pairs:
        if ours != theirs:
            raise ControlNetFileError(
                f"{name}: its {what} ({ours}) does not match the {base_label} checkpoint's ({theirs}); "
                "pick a ControlNet made for this model"
            )
