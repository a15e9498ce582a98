"""Face restoration test helpers, saved the way the released files are (a torch pickle of
{"params_ema": state dict}) and loaded by the app's own strict loaders:

- a tiny GFPGAN v1 (clean), built by webui.core.faces.gfpgan_arch with small sizes (128 px, 1/32 of the
  channels, 32-wide styles, 2 MLP layers), so every kind of key of GFPGANv1.3/1.4 is there;
- a tiny CodeFormer, built by webui.core.faces.codeformer_arch: the released codeformer.pth's key layout
  (every encoder/generator block, the fuse blocks at 32-256 px, 16x16 tokens at 512 px) with 4 channels
  at 512 px (instead of 64), a 32-entry, 8-wide codebook (instead of 1024 x 256) and 2 transformer layers
  16 wide (instead of 9 x 512); one pass over a 512 crop takes a fraction of a second on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from webui.core.faces.codeformer_arch import CodeFormer, CodeFormerConfig
from webui.core.faces.gfpgan_arch import GFPGANConfig, GFPGANv1Clean

TINY_GFPGAN = GFPGANConfig(out_size=128, num_style_feat=32, channel_multiplier=2, narrow=1 / 32, num_mlp=2)
TINY_CODEFORMER = CodeFormerConfig(nf=4, emb_dim=8, codebook_size=32, dim_embd=16, n_layers=2, dim_mlp=32)


def tiny_gfpgan(seed: int = 0, config: GFPGANConfig = TINY_GFPGAN) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = GFPGANv1Clean(config)
    with torch.no_grad():  # the released files' modulation biases start at 1 (unmodulated weights)
        for name, p in net.named_parameters():
            if name.endswith("modulation.bias"):
                p.fill_(1.0)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def write_tiny_gfpgan(path: Path, seed: int = 0) -> Path:
    """A tiny GFPGAN .pth at `path` (folders made), as BasicSR saves: {"params_ema": state dict}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": tiny_gfpgan(seed)}, path)
    return path


def tiny_codeformer(seed: int = 0, config: CodeFormerConfig = TINY_CODEFORMER) -> dict[str, torch.Tensor]:
    """Random weights (torch's initialisation; the position embedding, zero at first, drawn too)."""
    torch.manual_seed(seed)
    net = CodeFormer(config)
    with torch.no_grad():
        net.position_emb.normal_(0, 0.5)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def write_tiny_codeformer(path: Path, seed: int = 0) -> Path:
    """A tiny CodeFormer .pth at `path` (folders made), as codeformer.pth: {"params_ema": state dict}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": tiny_codeformer(seed)}, path)
    return path


def face_models(root: Path, *, gfpgan: bool = False, codeformer: bool = False) -> Path:
    """An A1111-style models folder under `root` with the tiny files asked for, under the released
    names: GFPGAN/GFPGANv1.4.pth, Codeformer/codeformer-v0.1.0.pth."""
    if gfpgan:
        write_tiny_gfpgan(root / "GFPGAN" / "GFPGANv1.4.pth")
    if codeformer:
        write_tiny_codeformer(root / "Codeformer" / "codeformer-v0.1.0.pth")
    return root
