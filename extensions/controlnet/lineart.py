"""The lineart_realistic and lineart_coarse preprocessors: the "informative drawings" generator
(Chan, Durand, Isola 2022) that the line-art ControlNets were trained on, with its two weight files
`sk_model.pth` (realistic) and `sk_model2.pth` (coarse) from models/ControlNet/annotators.

The network, as those files store it (`model0` ... `model4`):

    reflect-pad 3, conv 7x7 -> W, instance norm, ReLU                       model0
    2 x [conv 3x3 stride 2 -> 2W, 4W, instance norm, ReLU]                  model1
    N x residual [reflect-pad, conv 3x3, norm, ReLU, reflect-pad, conv, norm] model2
    2 x [transposed conv 3x3 stride 2 -> 2W, W, instance norm, ReLU]        model3
    reflect-pad 3, conv 7x7 -> 1, sigmoid                                   model4

The real files have W = 64 and N = 3; both are read from the weights, so a smaller network of the same
shape loads too. The input is RGB in [0, 1]; the output, one channel in [0, 1] with dark lines on white,
is inverted (white lines on black, what the ControlNets read), as sd-webui-controlnet does.
The files are pickles: they are read only through the plugin API's safe loader (`weights_only=True`,
annotator_files.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .annotator_files import Nets, checked, load_strict, read_state

FILES = {"lineart_realistic": "sk_model.pth", "lineart_coarse": "sk_model2.pth"}


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Generator(nn.Module):
    def __init__(self, width: int = 64, residual_blocks: int = 3) -> None:
        super().__init__()
        w = width
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, w, 7), nn.InstanceNorm2d(w), nn.ReLU()
        )
        self.model1 = nn.Sequential(
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.InstanceNorm2d(4 * w), nn.ReLU(),
        )  # fmt: skip
        self.model2 = nn.Sequential(*(ResidualBlock(4 * w) for _ in range(residual_blocks)))
        self.model3 = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(w), nn.ReLU(),
        )  # fmt: skip
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def load_generator(path: Path) -> Generator:
    """The generator in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return generator_from(read_state(path), path)


def generator_from(sd: dict[str, torch.Tensor], path: Path) -> Generator:
    """The generator holding `sd` (the state dict of `path`, named in errors)."""
    sd = checked(sd, path, "model0.1.weight", "an informative-drawings line-art model")
    width = int(sd["model0.1.weight"].shape[0])
    blocks = len({m.group(1) for k in sd if (m := re.match(r"model2\.(\d+)\.", k))})
    return load_strict(Generator(width, blocks), sd, path)


@torch.no_grad()
def line_map(model: Generator, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """White lines on black (uint8, H x W) for an RGB uint8 array, the network run on `device`; the input
    is edge-padded to a multiple of 4 (two stride-2 steps) and the map cropped back to its size."""
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="edge")
    x = torch.from_numpy(padded).float().div(255).permute(2, 0, 1)[None].to(device)
    line = model(x)[0, 0, :h, :w].cpu().numpy()
    return 255 - (line * 255.0).clip(0, 255).astype(np.uint8)


def run(path: Path, rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """The RGB map of `rgb` (the image already scaled to the preprocessor resolution), the network
    from `nets` (default: read now, on the CPU)."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: generator_from(sd, path)) as model:
        lines = line_map(model, rgb, nets.run_device)
    return Image.fromarray(np.repeat(lines[:, :, None], 3, axis=2))
