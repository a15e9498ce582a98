"""The softedge_pidinet, softedge_pidisafe and scribble_pidinet preprocessors: PiDiNet (pixel difference
networks, Su et al. 2021), the table-5 model `table5_pidinet.pth` in models/ControlNet/annotators, as
sd-webui-controlnet runs it.

The network ("carv4" with dilation and spatial attention), as the file stores it:

    init_block        3x3 conv 3 -> C, no bias
    block1_1 .. 1_3   C          each block: depthwise 3x3 `conv1` (no bias), ReLU `relu2`, 1x1 `conv2`
    block2_1 .. 2_4   2C         (no bias), added to the block's input; the first block of stages 2-4
    block3_1 .. 3_4   4C         max-pools 2x2 first and maps its input through a 1x1 `shortcut`
    block4_1 .. 4_4   4C         (with bias) before the sum
    per stage i       dilations.i (CDCM: ReLU, 1x1 conv -> D with bias, the sum of four 3x3 convs of
                      dilation 5, 7, 9, 11), attentions.i (CSAM: ReLU, 1x1 conv D -> 4, 3x3 conv 4 -> 1,
                      sigmoid, times its input), conv_reduces.i (1x1 conv D -> 1): a side output
    classifier        1x1 conv of the four side outputs (resized bilinear to the input size) -> 1

The real file has C = 60 and D = 24 (710,149 values, 2.87 MB in fp32); both are read from the weights.
The 16 3x3 convolutions (init_block and each block's conv1) are pixel-difference convolutions, in this
order: central (cd), angular (ad), radial (rd), vanilla (cv), repeated four times. Each is a vanilla
convolution with rearranged weights (`vanilla_kernel`): cd subtracts the kernel's sum from its centre,
ad subtracts each weight's clockwise neighbour from it, and rd spreads the ring of a 3x3 kernel onto a
5x5 one (outer ring +, inner ring -). The file's kernels are converted so on load (a file already
converted, with 5x5 rd kernels, loads as it is) and the network is plain convolutions.

The input is BGR in [0, 1]; the map is the classifier's output (the fused side output), sigmoid, which
edge_maps.py finishes (soft, safe or scribble). The image is edge-padded to a multiple of 8 (three
poolings) for the network and the map cropped back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .annotator_files import AnnotatorFileError, Nets, checked, load_strict, read_state
from .edge_maps import finish

FILE = "table5_pidinet.pth"
MODULES = {"softedge_pidinet": "soft", "softedge_pidisafe": "safe", "scribble_pidinet": "scribble"}
PDCS = ("cd", "ad", "rd", "cv") * 4  # init_block, then the 15 blocks in order
STAGES = ((1, 3), (2, 4), (4, 4), (4, 4))  # (width in units of C, blocks) of each stage
DILATIONS = (5, 7, 9, 11)
ATTENTION_WIDTH = 4
MARKER = "init_block.weight"
# ad: each weight minus its clockwise neighbour (indices into the kernel read row by row)
_CLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]
# rd: where a 3x3 kernel's weights 1..8 go on the 5x5 one, with + (outer ring) and - (inner ring)
_RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]
_RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def vanilla_kernel(weight: torch.Tensor, pdc: str) -> torch.Tensor:
    """The plain convolution kernel that computes pixel-difference convolution `pdc` (cv, cd, ad, rd) of
    3x3 kernel `weight` (out, in, 3, 3): 3x3 for cv, cd and ad, 5x5 (padding 2) for rd."""
    out_ch, in_ch = weight.shape[:2]
    flat = weight.reshape(out_ch, in_ch, 9)
    if pdc == "cv":
        return weight.clone()
    if pdc == "cd":
        kernel = flat.clone()
        kernel[:, :, 4] -= flat.sum(dim=2)
        return kernel.reshape(out_ch, in_ch, 3, 3)
    if pdc == "ad":
        return (flat - flat[:, :, _CLOCKWISE]).reshape(out_ch, in_ch, 3, 3)
    if pdc == "rd":
        kernel = flat.new_zeros(out_ch, in_ch, 25)
        kernel[:, :, _RD_OUTER] = flat[:, :, 1:]
        kernel[:, :, _RD_INNER] = -flat[:, :, 1:]
        return kernel.reshape(out_ch, in_ch, 5, 5)
    raise ValueError(f"unknown pixel-difference convolution {pdc!r}")


def _conv(in_ch: int, out_ch: int, pdc: str, groups: int = 1) -> nn.Conv2d:
    size = 5 if pdc == "rd" else 3
    return nn.Conv2d(in_ch, out_ch, size, padding=size // 2, groups=groups, bias=False)


class Block(nn.Module):
    """Depthwise conv, ReLU, 1x1 conv, plus the input (pooled and widened first when `stride` is 2)."""

    def __init__(self, pdc: str, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.conv1 = _conv(in_ch, in_ch, pdc, groups=in_ch)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(self.relu2(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation convolution module: four dilated 3x3 convs of a 1x1 projection, summed."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1)
        for i, d in enumerate(DILATIONS):
            self.add_module(f"conv2_{i + 1}", nn.Conv2d(out_ch, out_ch, 3, dilation=d, padding=d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(x))
        return sum((getattr(self, f"conv2_{i + 1}")(x) for i in range(len(DILATIONS))), torch.zeros_like(x))


class CSAM(nn.Module):
    """Compact spatial attention module: the input times a sigmoid mask computed from it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, ATTENTION_WIDTH, 1)
        self.conv2 = nn.Conv2d(ATTENTION_WIDTH, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(self.relu1(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """The converted (plain convolution) network; `forward` gives the fused edge logits."""

    def __init__(self, width: int = 60, dilation: int = 24) -> None:
        super().__init__()
        self.init_block = _conv(3, width, PDCS[0])
        layer, in_ch, widths = 1, width, []
        for stage, (scale, blocks) in enumerate(STAGES, start=1):
            out_ch = scale * width
            for b in range(1, blocks + 1):
                stride = 2 if stage > 1 and b == 1 else 1
                self.add_module(f"block{stage}_{b}", Block(PDCS[layer], in_ch, out_ch, stride))
                layer, in_ch = layer + 1, out_ch
            widths.append(out_ch)
        self.dilations = nn.ModuleList(CDCM(w, dilation) for w in widths)
        self.attentions = nn.ModuleList(CSAM(dilation) for _ in widths)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation) for _ in widths)
        self.classifier = nn.Conv2d(len(widths), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = self.init_block(x)
        sides = []
        for stage, (_, blocks) in enumerate(STAGES, start=1):
            for b in range(1, blocks + 1):
                h = getattr(self, f"block{stage}_{b}")(h)
            i = len(sides)
            side = self.conv_reduces[i](self.attentions[i](self.dilations[i](h)))
            sides.append(F.interpolate(side, size=size, mode="bilinear", align_corners=False))
        return self.classifier(torch.cat(sides, 1))


def pdc_layers() -> dict[str, str]:
    """{key of a pixel-difference kernel in the file: its kind}, in network order."""
    names = ["init_block.weight"]
    names += [
        f"block{s}_{b}.conv1.weight" for s, (_, n) in enumerate(STAGES, start=1) for b in range(1, n + 1)
    ]
    return dict(zip(names, PDCS, strict=True))


def converted(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` with its pixel-difference kernels made vanilla (`vanilla_kernel`); a state dict whose rd
    kernels are already 5x5 is returned as it is. Keys missing here are left for the strict load."""
    rd = next(k for k, pdc in pdc_layers().items() if pdc == "rd")
    if rd in sd and sd[rd].shape[-1] == 5:
        return sd
    out = dict(sd)
    for key, pdc in pdc_layers().items():
        if key in out and out[key].shape[-2:] == (3, 3):
            out[key] = vanilla_kernel(out[key].float(), pdc)
    return out


def load_net(path: Path) -> PiDiNet:
    """The network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return net_from(read_state(path), path)


def net_from(sd: dict[str, torch.Tensor], path: Path) -> PiDiNet:
    """The network holding `sd` (the state dict of `path`, named in errors), its kernels converted."""
    sd = checked(sd, path, MARKER, "a PiDiNet model")
    dilation = "dilations.0.conv1.weight"
    if dilation not in sd:
        raise AnnotatorFileError(f"{path.name}: not the table-5 PiDiNet (no {dilation}: no dilation module)")
    net = PiDiNet(int(sd[MARKER].shape[0]), int(sd[dilation].shape[0]))
    return load_strict(net, converted(sd), path)


@torch.no_grad()
def edge_map(model: PiDiNet, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The edge probability (float32, H x W, in [0, 1]) of an RGB uint8 array, the network run on
    `device`."""
    h, w = rgb.shape[:2]
    step = 2 ** (len(STAGES) - 1)
    padded = np.pad(rgb[:, :, ::-1], ((0, -h % step), (0, -w % step), (0, 0)), mode="edge")
    x = torch.from_numpy(padded.copy()).float().div(255).permute(2, 0, 1)[None].to(device)
    return torch.sigmoid(model(x))[0, 0, :h, :w].float().cpu().numpy()


def run(path: Path, name: str, rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """Module `name`'s RGB map of `rgb` (the image already scaled to the preprocessor resolution), the
    network from `nets` (default: read now, on the CPU)."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: net_from(sd, path)) as model:
        edge = edge_map(model, rgb, nets.run_device)
    return Image.fromarray(np.repeat(finish(edge, MODULES[name])[:, :, None], 3, axis=2))
