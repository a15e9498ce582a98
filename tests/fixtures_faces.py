"""Face restoration test helpers: a tiny GFPGAN v1 (clean) file, built by webui.core.faces.gfpgan_arch with
small sizes (128 px, 1/32 of the channels, 32-wide styles, 2 MLP layers) so every kind of key of the
released GFPGANv1.3/1.4 files is there, saved the way they are: a torch pickle of {"params_ema": ...}."""

from __future__ import annotations

from pathlib import Path

import torch

from webui.core.faces.gfpgan_arch import GFPGANConfig, GFPGANv1Clean

TINY_GFPGAN = GFPGANConfig(out_size=128, num_style_feat=32, channel_multiplier=2, narrow=1 / 32, num_mlp=2)


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
