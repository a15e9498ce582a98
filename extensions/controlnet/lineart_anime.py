"""The lineart_anime preprocessor: the pix2pix U-Net generator the anime line-art ControlNet was trained
on, from `netG.pth` in models/ControlNet/annotators.

The network, as the file stores it: eight nested skip blocks under `model.`, each block's layers in one
`model` sequence, the next block inside it (so the keys read `model.model.1.model.3.model.1.weight`):

    outermost   conv 4x4 s2 (3 -> W), [inner], ReLU, transposed conv 4x4 s2 (2W -> 1), tanh
    then        LeakyReLU(0.2), conv 4x4 s2, instance norm, [inner], ReLU, transposed conv, instance norm
                at widths W -> 2W -> 4W -> 8W -> 8W -> 8W -> 8W (the transposed conv reads the inner
                block's output concatenated with its input: twice the inner width)
    innermost   LeakyReLU(0.2), conv 4x4 s2 (8W -> 8W), ReLU, transposed conv (8W -> 8W), instance norm

Instance norms carry no weights (affine=False, no running stats); every conv has a bias. The real file
has W = 64; W is read from the weights, so a narrower network of the same layout loads too.

As sd-webui-controlnet runs it: the RGB image is resized (bicubic) to the next multiple of 256 each way
(eight stride-2 steps), scaled to [-1, 1]; the output, dark lines on white in [-1, 1], is scaled to
[0, 255], resized back (bicubic) and inverted: white lines on black, what the ControlNet reads.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from .annotator_files import Nets, checked, load_strict, read_state

FILES = {"lineart_anime": "netG.pth"}
DOWNS = 8  # stride-2 steps of the real generator: the input is a multiple of 2**8 = 256
MARKER = "model.model.0.weight"


class SkipBlock(nn.Module):
    """One level of the U-Net: down, the inner levels, up; its input is concatenated to its output (except
    at the outermost level, which makes the image)."""

    def __init__(self, outer: int, inner: int, sub: SkipBlock | None, in_ch: int | None = None) -> None:
        super().__init__()
        self.outermost = in_ch is not None
        down = nn.Conv2d(in_ch or outer, inner, 4, stride=2, padding=1)
        up_in = inner if sub is None else 2 * inner
        up = nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1)
        if self.outermost:
            assert sub is not None
            layers: list[nn.Module] = [down, sub, nn.ReLU(), up, nn.Tanh()]
        elif sub is None:  # innermost: no norm after the down conv
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, nn.InstanceNorm2d(inner), sub, nn.ReLU(), up,
                      nn.InstanceNorm2d(outer)]  # fmt: skip
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        block = SkipBlock(8 * w, 8 * w, None)
        for _ in range(DOWNS - 5):
            block = SkipBlock(8 * w, 8 * w, block)
        for outer in (4 * w, 2 * w, w):
            block = SkipBlock(outer, 2 * outer, block)
        self.model = SkipBlock(1, w, block, in_ch=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def load_generator(path: Path) -> UnetGenerator:
    """The generator in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return generator_from(read_state(path), path)


def generator_from(sd: dict[str, torch.Tensor], path: Path) -> UnetGenerator:
    """The generator holding `sd` (the state dict of `path`, named in errors)."""
    sd = checked(sd, path, MARKER, "an anime line-art (pix2pix U-Net) model")
    return load_strict(UnetGenerator(int(sd[MARKER].shape[0])), sd, path)


@torch.no_grad()
def line_map(model: UnetGenerator, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """White lines on black (uint8, H x W) for an RGB uint8 array, the network run on `device`."""
    h, w = rgb.shape[:2]
    step = 2**DOWNS
    size = (step * -(-w // step), step * -(-h // step))
    x = torch.from_numpy(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)).float()
    x = (x / 127.5 - 1.0).permute(2, 0, 1)[None].to(device)
    line = (model(x)[0, 0] * 127.5 + 127.5).cpu().numpy()
    line = cv2.resize(line, (w, h), interpolation=cv2.INTER_CUBIC)
    return 255 - line.clip(0, 255).astype(np.uint8)


def run(path: Path, rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """The RGB map of `rgb` (the image already scaled to the preprocessor resolution), the network
    from `nets` (default: read now, on the CPU)."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: generator_from(sd, path)) as model:
        lines = line_map(model, rgb, nets.run_device)
    return Image.fromarray(np.repeat(lines[:, :, None], 3, axis=2))
