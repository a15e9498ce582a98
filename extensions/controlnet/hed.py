"""The softedge_hed, softedge_hedsafe and scribble_hed preprocessors: lllyasviel's Apache-2 HED
(holistically-nested edge detection) network that the soft-edge and scribble ControlNets were trained
with, from `ControlNetHED.pth` in models/ControlNet/annotators.

The network, as the file stores it: a learned per-channel offset `norm` (1, 3, 1, 1) subtracted from
the RGB input in 0..255, then five VGG-like blocks `block1` ... `block5`, each a sequence `convs` of 3x3
convolutions (padding 1, each followed by a ReLU) and a 1x1 `projection` to one channel:

    block   convs   width   input
    1       2       W       the normalised image
    2       2       2W      block 1, max-pooled 2x2
    3       3       4W      block 2, max-pooled 2x2
    4       3       8W      block 3, max-pooled 2x2
    5       3       8W      block 4, max-pooled 2x2

The real file has W = 64 (about 7.35M values, 29.4 MB in fp32); W is read from the weights, so a
narrower network of the same layout loads too. The edge map: the five projections resized (bilinear) to
the input size, averaged, sigmoid; edge_maps.py finishes it (soft, safe or scribble). The image is
edge-padded to a multiple of 16 (four poolings) for the network and the map cropped back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .annotator_files import Nets, checked, load_strict, read_state
from .edge_maps import finish

FILE = "ControlNetHED.pth"
MODULES = {"softedge_hed": "soft", "softedge_hedsafe": "safe", "scribble_hed": "scribble"}
CONVS = (2, 2, 3, 3, 3)
SCALES = (1, 2, 4, 8, 8)  # each block's width, in units of W
POOLS = len(CONVS) - 1
MARKER = "block1.convs.0.weight"


class ConvBlock(nn.Module):
    """3x3 convolutions with ReLUs, and a 1x1 projection of the result to one channel."""

    def __init__(self, in_ch: int, out_ch: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1) for i in range(layers))
        )
        self.projection = nn.Conv2d(out_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDNet(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        widths = [3, *(s * width for s in SCALES)]
        for i, layers in enumerate(CONVS):
            self.add_module(f"block{i + 1}", ConvBlock(widths[i], widths[i + 1], layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five side outputs (one channel each, at 1, 1/2, ... 1/16 of the input size) of an RGB
        batch in 0..255."""
        h = x - self.norm
        sides = []
        for i in range(len(CONVS)):
            if i:
                h = F.max_pool2d(h, 2, 2)
            h, side = getattr(self, f"block{i + 1}")(h)
            sides.append(side)
        return sides


def load_net(path: Path) -> HEDNet:
    """The network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return net_from(read_state(path), path)


def net_from(sd: dict[str, torch.Tensor], path: Path) -> HEDNet:
    """The network holding `sd` (the state dict of `path`, named in errors)."""
    sd = checked(sd, path, MARKER, "a ControlNet HED model")
    return load_strict(HEDNet(int(sd[MARKER].shape[0])), sd, path)


@torch.no_grad()
def edge_map(model: HEDNet, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The edge probability (float32, H x W, in [0, 1]) of an RGB uint8 array, the network run on
    `device`."""
    h, w = rgb.shape[:2]
    step = 2**POOLS
    padded = np.pad(rgb, ((0, -h % step), (0, -w % step), (0, 0)), mode="edge")
    x = torch.from_numpy(padded).float().permute(2, 0, 1)[None].to(device)
    size = x.shape[2:]
    sides = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in model(x)]
    edge = torch.sigmoid(torch.cat(sides, 1).mean(1))[0, :h, :w]
    return edge.float().cpu().numpy()


def run(path: Path, name: str, rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """Module `name`'s RGB map of `rgb` (the image already scaled to the preprocessor resolution), the
    network from `nets` (default: read now, on the CPU)."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: net_from(sd, path)) as model:
        edge = edge_map(model, rgb, nets.run_device)
    return Image.fromarray(np.repeat(finish(edge, MODULES[name])[:, :, None], 3, axis=2))
