"""Tiny SD3 and Flux ControlNets of the real architecture (diffusers' SD3ControlNetModel and
FluxControlNetModel, as InstantX ships them), matching the tiny SD3 and Flux dev models, in the layouts
they ship in: the model's state dict as one safetensors file, and a diffusers folder (config.json beside
`diffusion_pytorch_model.safetensors`). And an XLabs Flux ControlNet: a FluxControlNetModel with a
pixel-space hint encoder, written in XLabs' own layout (Black Forest Labs' block names, made with the
core's Flux mapping, `input_hint_block.<0..14>`, `pos_embed_input`).

Every weight, the zero-initialised ones included, is drawn from a seeded generator, so a unit visibly
changes a picture.

`sharpen_posterior(vae)`: diffusers' ControlNet pipelines draw the control image's latents from the VAE
posterior (SD3's without a generator), where Sfumato takes its mean. A VAE whose posterior has (near)
zero variance (log-variance -30: std 3e-7) makes the two the same, so a parity test measures the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import FluxControlNetModel, SD3ControlNetModel
from safetensors.torch import save_file

from webui.core.models import flux_layout
from webui.core.models.fused_layout import Fused, linear
from webui.core.models.fused_layout import to_original as fused_to_original
from webui.core.models.tiny import _randomize
from webui.core.models.tiny_flow import T5_WIDTH, transformer_config


def flow_controlnet_config(arch: str) -> dict[str, Any]:
    """The ControlNet config for tiny `arch` (sd3, sd3.5: 2 joint blocks against the transformer's 3,
    SD3.5's with its q/k norms and a dual-attention first block; Flux: one double and one single block)."""
    base = transformer_config(arch)
    if arch == "sd3.5":
        return {**flow_controlnet_config("sd3"), **{k: base[k] for k in ("qk_norm", "dual_attention_layers",
                "num_attention_heads", "attention_head_dim")}}  # fmt: skip
    if arch == "sd3":
        keep = ("sample_size", "patch_size", "in_channels", "out_channels", "attention_head_dim",
                "num_attention_heads", "joint_attention_dim", "caption_projection_dim",
                "pooled_projection_dim", "pos_embed_max_size")  # fmt: skip
        return {**{k: base[k] for k in keep}, "num_layers": 2}
    keep = ("patch_size", "in_channels", "attention_head_dim", "num_attention_heads", "joint_attention_dim",
            "pooled_projection_dim", "guidance_embeds")  # fmt: skip
    return {**{k: base[k] for k in keep}, "num_layers": 1, "num_single_layers": 1,
            "axes_dims_rope": list(base["axes_dims_rope"])}  # fmt: skip


def xlabs_config() -> dict[str, Any]:
    """XLabs' shape for the tiny Flux dev: two double blocks, no single block, a 16-channel hint encoder
    whose 2x2 patches are the 64 latent channels."""
    cfg = flow_controlnet_config("flux-dev")
    return {
        **cfg,
        "num_layers": 2,
        "num_single_layers": 0,
        "patch_size": 2,
        "conditioning_embedding_channels": 16,
    }


def build_flow_controlnet(arch: str, seed: int = 0) -> Any:
    """A tiny ControlNet for `arch` ("sd3", "sd3.5", "flux-dev", "flux-xlabs", or "flux-union": the Flux
    one with a mode embedder of 10 modes, as InstantX's Union)."""
    cls: Any = SD3ControlNetModel if arch.startswith("sd3") else FluxControlNetModel
    if arch == "flux-xlabs":
        cfg = xlabs_config()
    elif arch == "flux-union":
        cfg = {**flow_controlnet_config("flux-dev"), "num_mode": 10}
    else:
        cfg = flow_controlnet_config(arch)
    with torch.random.fork_rng(devices=[]):
        model = cls(**cfg)
    with torch.no_grad():
        _randomize(model, torch.Generator().manual_seed(seed))
    assert model.config.get("joint_attention_dim", T5_WIDTH) == T5_WIDTH
    return model.eval()


def write_flow_controlnets(folder: Path) -> dict[tuple[str, str], Path]:
    """`folder/tiny-cn-<arch>.safetensors` and the folder `tiny-cn-<arch>-folder/` for sd3 and flux-dev
    (seed 7 for sd3, 8 for Flux, the same weights in both), `tiny-cn-sd3.5.safetensors` (SD35_SEED),
    `tiny-cn-flux-union.safetensors` (UNION_SEED) and `tiny-cn-flux-xlabs.safetensors` (XLabs' layout,
    XLABS_SEED): {(arch, "file" | "folder"): path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for arch, seed in (("sd3", 7), ("flux-dev", 8)):
        model = build_flow_controlnet(arch, seed)
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        out[arch, "file"] = folder / f"tiny-cn-{arch}.safetensors"
        save_file(sd, str(out[arch, "file"]))
        model.save_pretrained(folder / f"tiny-cn-{arch}-folder")
        out[arch, "folder"] = folder / f"tiny-cn-{arch}-folder" / "diffusion_pytorch_model.safetensors"
    sd35 = build_flow_controlnet("sd3.5", SD35_SEED)
    out["sd3.5", "file"] = folder / "tiny-cn-sd3.5.safetensors"
    save_file(
        {k: v.detach().clone().contiguous() for k, v in sd35.state_dict().items()}, str(out["sd3.5", "file"])
    )
    union = build_flow_controlnet("flux-union", UNION_SEED)
    out["flux-union", "file"] = folder / "tiny-cn-flux-union.safetensors"
    save_file(
        {k: v.detach().clone().contiguous() for k, v in union.state_dict().items()},
        str(out["flux-union", "file"]),
    )
    out["flux-xlabs", "file"] = folder / "tiny-cn-flux-xlabs.safetensors"
    save_file(to_xlabs(build_flow_controlnet("flux-xlabs", XLABS_SEED)), str(out["flux-xlabs", "file"]))
    return out


XLABS_SEED = 9
SD35_SEED = 6
UNION_SEED = 11


def to_xlabs(model: Any) -> dict[str, torch.Tensor]:
    """A FluxControlNetModel with a hint encoder in XLabs' layout."""
    cfg = model.config
    rules = [
        r
        for r in flux_layout.rules(cfg.num_layers, 0, cfg.guidance_embeds)
        if not r.original.startswith("final_layer")
    ]
    rules += linear("pos_embed_input", "controlnet_x_embedder")
    hint = ["conv_in", *(f"blocks.{i}" for i in range(6)), "conv_out"]
    rules += [
        r
        for i, name in enumerate(hint)
        for r in linear(f"input_hint_block.{2 * i}", f"input_hint_block.{name}")
    ]
    rules += [
        r for i in range(cfg.num_layers) for r in linear(f"controlnet_blocks.{i}", f"controlnet_blocks.{i}")
    ]
    assert all(isinstance(r, Fused) for r in rules)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    return {k: v.clone().contiguous() for k, v in fused_to_original(rules, sd, "XLabs ControlNet").items()}


def sharpen_posterior(vae: Any) -> None:
    """Make the VAE's posterior (near) deterministic: log-variance channels -30 everywhere."""
    conv = vae.encoder.conv_out
    half = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[half:] = 0
        conv.bias[half:] = -30.0
