"""Plain-torch super-resolution networks, built from the key names and shapes of a state dict.

Two families cover most files in models/ESRGAN and models/RealESRGAN:

- RRDBNet (ESRGAN, BSRGAN, Real-ESRGAN x4plus/x2plus): conv_first, N residual-in-residual dense
  blocks (3 dense blocks of 5 convs each, residuals scaled by 0.2), conv_body, nearest-neighbour 2x
  upsampling + conv per factor of 2, conv_hr, conv_last; LeakyReLU(0.2) throughout. Two key layouts
  exist: the original ESRGAN one (`model.0`, `model.1.sub.0.RDB1.conv1.0`, ...) and BasicSR's
  (`conv_first`, `body.0.rdb1.conv1`, ...); Real-ESRGAN x2/x1 models take pixel-unshuffled input
  (12 or 48 input channels) and still upsample 4x inside.
- SRVGGNetCompact (Real-ESRGAN general/anime-video "compact"): conv + PReLU pairs in `body.N`, a last
  conv to out*scale^2 channels, pixel shuffle, plus the nearest-upsampled input.

Images go in and come out as RGB float tensors in [0, 1], shape (1, 3, H, W).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedModel(ValueError):
    """The state dict is not an architecture this module knows."""


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class DenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = _lrelu(self.conv1(x))
        x2 = _lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = _lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = _lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """BasicSR's key layout. `unshuffle` (1, 2 or 4) folds the input before the body (Real-ESRGAN x2/x1)."""

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        ups: int = 2,
        unshuffle: int = 1,
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(in_nc * unshuffle * unshuffle, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.ups = nn.ModuleList([nn.Conv2d(nf, nf, 3, 1, 1) for _ in range(ups)])
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)
        self.scale = 2**ups / unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in self.ups:
            feat = _lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))


class SRVGGNetCompact(nn.Module):
    def __init__(
        self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, n_conv: int = 16, scale: int = 4
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_nc, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(n_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, out_nc * scale * scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file, looking inside Real-ESRGAN's "params_ema"/"params" wrappers."""
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UnsupportedModel(f"the file holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def old_to_new(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-ESRGAN keys to BasicSR keys (RRDBNet)."""
    out: dict[str, torch.Tensor] = {}
    top = sorted({int(m.group(1)) for k in sd if (m := _OLD_TOP.match(k))})
    if not top or top[0] != 0 or len(top) < 3:
        raise UnsupportedModel("not an ESRGAN state dict (model.N keys missing)")
    *ups, hr, last = top[1:]  # model.0 conv_first; then the upsampling convs, HR conv, last conv
    names = {0: "conv_first", hr: "conv_hr", last: "conv_last"} | {n: f"ups.{i}" for i, n in enumerate(ups)}
    nb = 0
    for k, v in sd.items():
        if m := _OLD_RDB.match(k):
            block, rdb, conv, kind = m.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = v
            nb = max(nb, int(block) + 1)
        elif m := _OLD_TOP.match(k):
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = v
    for kind in ("weight", "bias"):
        key = f"model.1.sub.{nb}.{kind}"
        if key not in sd:
            raise UnsupportedModel(f"ESRGAN state dict without its trunk conv ({key})")
        out[f"conv_body.{kind}"] = sd[key]
    return out


def _basicsr_ups(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if m := re.match(r"^conv_up(\d)\.(weight|bias)$", k):
            out[f"ups.{int(m.group(1)) - 1}.{m.group(2)}"] = v
        else:
            out[k] = v
    return out


def build(sd: dict[str, torch.Tensor]) -> nn.Module:
    """The network described by `sd`, with its weights loaded, in eval mode; `.scale` is its factor."""
    if "model.0.weight" in sd:
        sd = old_to_new(sd)
    elif "conv_first.weight" in sd:
        sd = _basicsr_ups(sd)
    elif "body.0.weight" in sd and sd["body.0.weight"].ndim == 4:
        return _build_compact(sd)
    else:
        raise UnsupportedModel("unknown architecture (not ESRGAN/Real-ESRGAN RRDBNet or SRVGGNetCompact)")
    first = sd["conv_first.weight"]
    nf, in_ch = first.shape[0], first.shape[1]
    out_nc = sd["conv_last.weight"].shape[0]
    unshuffle = int(math.isqrt(in_ch // out_nc)) if in_ch > out_nc else 1
    if unshuffle * unshuffle * out_nc != in_ch:
        raise UnsupportedModel(f"conv_first takes {in_ch} channels: not 3, 12 or 48")
    nb = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    gc = sd["body.0.rdb1.conv1.weight"].shape[0]
    ups = len({k.split(".")[1] for k in sd if k.startswith("ups.")})
    net = RRDBNet(out_nc, out_nc, nf, nb, gc, ups, unshuffle)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def _build_compact(sd: dict[str, torch.Tensor]) -> nn.Module:
    convs = sorted(int(k.split(".")[1]) for k in sd if k.endswith(".weight") and sd[k].ndim == 4)
    nf, in_nc = sd["body.0.weight"].shape[:2]
    out_ch = sd[f"body.{convs[-1]}.weight"].shape[0]
    scale = math.isqrt(out_ch // in_nc)
    if scale * scale * in_nc != out_ch:
        raise UnsupportedModel(f"compact model's last conv has {out_ch} channels, not 3 x scale^2")
    net = SRVGGNetCompact(in_nc, in_nc, nf, len(convs) - 2, scale)
    net.load_state_dict(sd, strict=True)
    return net.eval()
