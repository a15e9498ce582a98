"""GFPGAN v1 "clean" (the network of GFPGANv1.3.pth and GFPGANv1.4.pth) in plain torch.

Published structure (Wang et al., "Towards Real-World Blind Face Restoration with Generative Facial
Prior", and the key names of the released files): a U-Net encodes the 512x512 face down to 4x4, a linear
layer turns that into one style vector per decoder layer, and a StyleGAN2 decoder (modulated convolutions,
no custom CUDA ops: bilinear resampling) draws the face, with its features scaled and shifted by
conditions the U-Net's up path makes at each resolution (spatial feature transform, SFT, on half of the
decoder's channels in v1.3/v1.4).

Modules and their state-dict names:

    conv_body_first           1x1 conv, RGB -> U-Net channels at full size
    conv_body_down.{i}        ResBlocks halving the size (conv1, conv2 3x3; skip 1x1 without bias)
    final_conv                3x3 conv at 4x4
    final_linear              4x4 features -> style codes (one per decoder layer: "different_w")
    conv_body_up.{i}          ResBlocks doubling the size, fed the down path's skips
    condition_scale/shift.{i} conv, LeakyReLU, conv: the SFT scale and shift at each size
    toRGB.{i}                 1x1 convs (the U-Net's own RGB, used in training only)
    stylegan_decoder          style_mlp (unused: the codes are already latents), constant_input,
                              style_conv1, to_rgb1, style_convs.{j}, to_rgbs.{i}, noises.noise{k}

`GFPGANConfig.from_state_dict` reads the sizes back from a file's tensor shapes, so the released files and
the tiny test fixture go through one path; loading is strict (every key and shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from webui.core.faces.strict import load_on_meta

LEAK = 0.2
SUPPORTED = "GFPGANv1.3.pth and GFPGANv1.4.pth are; the first release, GFPGANv1.pth, is not"


@dataclass(frozen=True)
class GFPGANConfig:
    """The hyperparameters of a GFPGANv1Clean network (defaults: GFPGANv1.3/1.4)."""

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: float = 2
    narrow: float = 1.0
    num_mlp: int = 8
    sft_half: bool = True
    different_w: bool = True

    @property
    def log_size(self) -> int:
        return int(math.log2(self.out_size))

    @property
    def num_latent(self) -> int:
        return self.log_size * 2 - 2

    def decoder_channels(self, size: int) -> int:
        """StyleGAN2's channel table: 512 up to 32 px, then halving from 64 px, times the multiplier."""
        if size <= 32:
            base: float = 512
        else:
            base = 512 * 32 / size * self.channel_multiplier
        return int(base * self.narrow)

    def unet_channels(self, size: int) -> int:
        """The U-Net runs at half the decoder's width."""
        if size <= 32:
            base: float = 512
        else:
            base = 512 * 32 / size * self.channel_multiplier
        return int(base * self.narrow * 0.5)

    def validate(self) -> None:
        if self.out_size < 8 or 2**self.log_size != self.out_size:
            raise ValueError(f"out_size must be a power of two >= 8, not {self.out_size}")
        if min(self.unet_channels(self.out_size), self.num_style_feat, self.num_mlp) < 1:
            raise ValueError(f"{self} gives a layer without channels")

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> GFPGANConfig:
        """The configuration whose network has these tensors' shapes; KeyError/ValueError when the
        tensors are not a GFPGANv1Clean network."""
        downs = {int(k.split(".")[1]) for k in state if k.startswith("conv_body_down.")}
        if not downs or downs != set(range(len(downs))):
            raise KeyError("conv_body_down")
        out_size = 2 ** (len(downs) + 2)
        num_style_feat = state["stylegan_decoder.style_conv1.modulated_conv.modulation.weight"].shape[1]
        mlp = {k for k in state if k.startswith("stylegan_decoder.style_mlp.") and k.endswith(".weight")}
        decoder4 = state["stylegan_decoder.constant_input.weight"].shape[1]
        narrow = decoder4 / 512
        multiplier: float = 2
        if out_size >= 64:  # the multiplier shows from 64 px on: channels there are 256 * m * narrow
            decoder64 = state["stylegan_decoder.style_convs.6.modulated_conv.weight"].shape[1]
            multiplier = decoder64 / (256 * narrow)
        unet8 = state["conv_body_up.0.conv2.weight"].shape[0]
        sft = state["condition_scale.0.2.weight"].shape[0]
        num_latent = 2 * int(math.log2(out_size)) - 2
        config = cls(
            out_size=out_size,
            num_style_feat=int(num_style_feat),
            channel_multiplier=multiplier,
            narrow=narrow,
            num_mlp=len(mlp),
            sft_half=sft == unet8,
            different_w=state["final_linear.weight"].shape[0] == num_latent * num_style_feat,
        )
        config.validate()
        return config


class ResBlock(nn.Module):
    """Two 3x3 convs with a bilinear resize between them, plus a resized 1x1 skip."""

    def __init__(self, cin: int, cout: int, scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.scale = scale

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._resize(F.leaky_relu(self.conv1(x), LEAK))
        h = F.leaky_relu(self.conv2(h), LEAK)
        skip: torch.Tensor = self.skip(self._resize(x))
        return h + skip


class NormStyleCode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's convolution: the weight scaled per input channel by the style, optionally
    demodulated, optionally after a bilinear 2x upsample; one grouped conv for the batch."""

    def __init__(
        self, cin: int, cout: int, kernel: int, num_style_feat: int, demodulate: bool, upsample: bool
    ) -> None:
        super().__init__()
        self.modulation = nn.Linear(num_style_feat, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel) / math.sqrt(cin * kernel**2))
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        cout, k = self.weight.shape[1], self.weight.shape[-1]
        weight = self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = x.shape[2:]
        out = F.conv2d(
            x.reshape(1, b * cin, h, w), weight.reshape(b * cout, cin, k, k), padding=k // 2, groups=b
        )
        return out.view(b, cout, h, w)


class StyleConv(nn.Module):
    """Modulated 3x3 conv, scaled noise, bias, LeakyReLU (times sqrt 2, the "clean" gain)."""

    def __init__(self, cin: int, cout: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(
            cin, cout, 3, num_style_feat, demodulate=True, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))  # the noise's strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)
        out = out + self.weight * noise + self.bias
        return F.leaky_relu(out, LEAK)


class ToRGB(nn.Module):
    def __init__(self, cin: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, num_style_feat, demodulate=False, upsample=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2's synthesis network (bilinear resampling), its features modulated by SFT conditions."""

    def __init__(self, c: GFPGANConfig) -> None:
        super().__init__()
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(c.num_mlp):
            mlp += [nn.Linear(c.num_style_feat, c.num_style_feat), nn.LeakyReLU(LEAK)]
        self.style_mlp = nn.Sequential(*mlp)  # kept for the keys: GFPGAN's codes are already latents
        ch4 = c.decoder_channels(4)
        self.constant_input = ConstantInput(ch4)
        self.style_conv1 = StyleConv(ch4, ch4, c.num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(ch4, c.num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        cin = ch4
        for i in range(3, c.log_size + 1):
            cout = c.decoder_channels(2**i)
            self.style_convs.append(StyleConv(cin, cout, c.num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, c.num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(cout, c.num_style_feat, upsample=True))
            cin = cout
        self.noises = nn.Module()
        for k in range((c.log_size - 2) * 2 + 1):  # one fixed noise map per StyleConv
            size = 2 ** ((k + 5) // 2)
            self.noises.register_buffer(f"noise{k}", torch.randn(1, 1, size, size))
        self.sft_half = c.sft_half

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        noise = [getattr(self.noises, f"noise{k}") for k in range(len(self.style_convs) + 1)]
        out = self.constant_input.weight.repeat(latent.shape[0], 1, 1, 1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip: torch.Tensor = self.to_rgb1(out, latent[:, 1], None)
        for n, to_rgb in enumerate(self.to_rgbs):
            i = 2 * n + 1  # the latent (and noise) index of this size's first conv
            out = self.style_convs[2 * n](out, latent[:, i], noise[i])
            scale, shift = conditions[2 * n], conditions[2 * n + 1]
            if self.sft_half:  # the second half of the channels only
                same, sft = out.split(out.shape[1] // 2, dim=1)
                out = torch.cat([same, sft * scale + shift], dim=1)
            else:
                out = out * scale + shift
            out = self.style_convs[2 * n + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


def _sft_branch(channels: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAK), nn.Conv2d(channels, out, 3, 1, 1)
    )


class GFPGANv1Clean(nn.Module):
    """x: (B, 3, out_size, out_size) RGB in [-1, 1] -> the restored face, same shape and range."""

    def __init__(self, config: GFPGANConfig | None = None) -> None:
        super().__init__()
        c = config or GFPGANConfig()
        c.validate()
        self.config = c
        size = c.out_size
        self.conv_body_first = nn.Conv2d(3, c.unet_channels(size), 1)
        self.conv_body_down = nn.ModuleList()
        cin = c.unet_channels(size)
        for i in range(c.log_size, 2, -1):
            cout = c.unet_channels(2 ** (i - 1))
            self.conv_body_down.append(ResBlock(cin, cout, 0.5))
            cin = cout
        ch4 = c.unet_channels(4)
        self.final_conv = nn.Conv2d(cin, ch4, 3, 1, 1)
        self.conv_body_up = nn.ModuleList()
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        self.toRGB = nn.ModuleList()
        cin = ch4
        for i in range(3, c.log_size + 1):
            cout = c.unet_channels(2**i)
            self.conv_body_up.append(ResBlock(cin, cout, 2))
            sft = cout if c.sft_half else cout * 2
            self.condition_scale.append(_sft_branch(cout, sft))
            self.condition_shift.append(_sft_branch(cout, sft))
            self.toRGB.append(nn.Conv2d(cout, 3, 1))
            cin = cout
        latents = c.num_latent if c.different_w else 1
        self.final_linear = nn.Linear(ch4 * 4 * 4, latents * c.num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        feat = F.leaky_relu(self.conv_body_first(x), LEAK)
        skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAK)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, c.num_style_feat)
        if latent.shape[1] == 1:
            latent = latent.expand(-1, c.num_latent, -1)
        conditions = []
        for up, scale, shift, skip in zip(
            self.conv_body_up, self.condition_scale, self.condition_shift, reversed(skips), strict=True
        ):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        out: torch.Tensor = self.stylegan_decoder(latent, conditions)
        return out


def build(state: dict[str, torch.Tensor]) -> GFPGANv1Clean:
    """The network these tensors are the weights of, every key and shape checked (strict).

    ValueError says what does not fit (a file of another architecture)."""
    try:
        config = GFPGANConfig.from_state_dict(state)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"not a GFPGAN v1 (clean) network ({SUPPORTED}): no or odd {e}") from e
    return load_on_meta(lambda: GFPGANv1Clean(config), state, f"a GFPGAN v1 (clean) network ({SUPPORTED})")
