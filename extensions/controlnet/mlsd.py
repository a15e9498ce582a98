"""The mlsd preprocessor: M-LSD (NAVER's mobile line-segment detector, Apache-2), the large 512 model
`mlsd_large_512_fp32.pth` in models/ControlNet/annotators, as sd-webui-controlnet runs it.

The network, as the file stores it: a MobileNetV2 trunk `backbone.features.0` ... `13` (a stride-2 3x3
conv of the 4-channel input to 32, then inverted residual blocks of widths 16, 24 x2, 32 x3, 64 x4,
96 x3; stride 2 at the first 24, 32 and 64 blocks, padded on the right and bottom only, as TFLite pads)
whose outputs after features 1, 3, 6, 10 and 13 feed a decoder `block15` ... `block23` that merges them
back up to half the input size and ends in 16 channels, of which the last nine are kept: a line-centre
score (channel 7) and each centre's displacement to the segment's start and end (channels 8-11).

Decoding (`segments`): the score's sigmoid, kept where it is the maximum of its 3x3 neighbourhood; the
200 best centres; a centre gives a segment when its score is above the value threshold (threshold_a,
"MLSD Value Threshold", default 0.1) and its segment is longer than the distance threshold
(threshold_b, "MLSD Distance Threshold", default 0.1, in half-size pixels). Segments are drawn 1 px
wide, white on black. The input is RGB plus a channel of ones, scaled to [-1, 1]; the image is
edge-padded to a multiple of 16 for the network and the map cropped back.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .annotator_files import Nets, checked, load_strict, read_state

FILE = "mlsd_large_512_fp32.pth"
MARKER = "backbone.features.0.0.weight"
TOP_K, PEAK_SIZE = 200, 3
# (expansion, output width, stride) of the inverted residual blocks features.1 ... features.13
TRUNK = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2),
         (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1))  # fmt: skip
TAPS = (1, 3, 6, 10, 13)  # the features whose outputs the decoder reads
STRIDE = 16


def _conv_bn(in_ch: int, out_ch: int, size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias), batch norm, ReLU6; a stride-2 conv pads only right and bottom (in forward)."""
    pad = 0 if stride == 2 else size // 2
    conv = nn.Conv2d(in_ch, out_ch, size, stride, pad, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = [_conv_bn(in_ch, hidden, 1)] if expand != 1 else []
        dw = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += [dw, nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)
        self.stride, self.residual = stride, stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.conv:
            stride2 = isinstance(layer, nn.Sequential) and layer[0].stride == (2, 2)
            y = layer(F.pad(y, (0, 1, 0, 1)) if stride2 else y)
        return x + y if self.residual else y


def _block(in_ch: int, out_ch: int, size: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (size // 2)
    conv = nn.Conv2d(in_ch, out_ch, size, padding=pad, dilation=dilation)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU())


class Merge(nn.Module):
    """1x1 conv of the skip (`conv2`) and of the deeper map (`conv1`, upsampled 2x), concatenated."""

    def __init__(self, skip_ch: int, deep_ch: int, upscale: bool = True) -> None:
        super().__init__()
        self.conv1, self.conv2, self.upscale = _block(deep_ch, 64, 1), _block(skip_ch, 64, 1), upscale

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), deep), 1)


class Refine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = _block(128, 128, 3), _block(128, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (
            _block(64, 64, 3, dilation=5),
            _block(64, 64, 3),
            nn.Conv2d(64, 16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(4, 32, 3, 2)]
        in_ch = 32
        for expand, out_ch, stride in TRUNK:
            layers.append(InvertedResidual(in_ch, out_ch, stride, expand))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(F.pad(x, (0, 1, 0, 1))) if i == 0 else layer(x)
            if i in TAPS:
                taps.append(x)
        return taps


class MLSD(nn.Module):
    """(1, 4, H, W) in [-1, 1] -> (1, 9, H/2, W/2): score, displacements (and 4 unused channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.block15, self.block16 = Merge(64, 96, upscale=False), Refine()
        self.block17, self.block18 = Merge(32, 64), Refine()
        self.block19, self.block20 = Merge(24, 64), Refine()
        self.block21, self.block22 = Merge(16, 64), Refine()
        self.block23 = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def load_net(path: Path) -> MLSD:
    return net_from(read_state(path), path)


def net_from(sd: dict[str, torch.Tensor], path: Path) -> MLSD:
    """The network holding `sd` (the state dict of `path`, named in errors)."""
    return load_strict(MLSD(), checked(sd, path, MARKER, "an M-LSD model"), path)


def segments(out: torch.Tensor, value: float, distance: float) -> np.ndarray:
    """(N, 4) segments x0, y0, x1, y1 in input pixels from the network output `out` (1, 9+, h, w)."""
    score = torch.sigmoid(out[0, 0])
    peaks = F.max_pool2d(score[None, None], PEAK_SIZE, stride=1, padding=PEAK_SIZE // 2)[0, 0]
    score = torch.where(peaks == score, score, torch.zeros_like(score))
    w = score.shape[1]
    scores, idx = torch.topk(score.flatten(), min(TOP_K, score.numel()))
    disp = out[0, 1:5].permute(1, 2, 0).cpu().numpy()
    found = []
    for s, i in zip(scores.tolist(), idx.tolist(), strict=True):
        y, x = divmod(i, w)
        dx0, dy0, dx1, dy1 = disp[y, x]
        if s > value and np.hypot(dx0 - dx1, dy0 - dy1) > distance:
            found.append([x + dx0, y + dy0, x + dx1, y + dy1])
    return 2 * np.array(found, dtype=np.float32).reshape(-1, 4)  # half size -> input size


def draw(lines: np.ndarray, h: int, w: int) -> np.ndarray:
    """White 1 px segments on black (uint8, h x w); coordinates are truncated to whole pixels."""
    canvas = np.zeros((h, w), np.uint8)
    for x0, y0, x1, y1 in lines.astype(np.int64).tolist():  # truncation toward zero, as int() does
        cv2.line(canvas, (x0, y0), (x1, y1), 255, 1)
    return canvas


@torch.no_grad()
def line_map(
    model: MLSD, rgb: np.ndarray, value: float, distance: float, device: torch.device | str = "cpu"
) -> np.ndarray:
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -h % STRIDE), (0, -w % STRIDE), (0, 0)), mode="edge").astype(np.float32)
    x = np.concatenate([padded, np.ones_like(padded[:, :, :1])], axis=2) / 127.5 - 1.0
    out = model(torch.from_numpy(x).permute(2, 0, 1)[None].to(device)).float().cpu()
    return draw(segments(out, value, distance), *padded.shape[:2])[:h, :w]


def run(path: Path, rgb: np.ndarray, value: float, distance: float, nets: Nets | None = None) -> Image.Image:
    """The RGB map of `rgb` (scaled to the preprocessor resolution), the network from `nets`."""
    nets = nets or Nets()
    with nets.use(path, lambda sd: net_from(sd, path)) as model:
        lines = line_map(model, rgb, value, distance, nets.run_device)
    return Image.fromarray(np.repeat(lines[:, :, None], 3, axis=2))
