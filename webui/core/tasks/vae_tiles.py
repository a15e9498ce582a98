"""Tiled VAE decode and encode: a large picture goes through the VAE's full-size layers in overlapping
tiles, so its memory is that of one tile plus the small latent-size layers, whatever the picture's size.

The VAE (diffusers' AutoencoderKL: SD1/SD2/SDXL, SD3 and Flux alike) is split where its resolution is
the latent's: the middle block (its one attention layer sees the whole picture) runs untiled, since at
latent size it is small; the up (decoder) or down (encoder) blocks run tile by tile. Each tile is run
with a margin of context around the part that is kept (convolutions see past a tile's edge) and
neighbours cross-fade over the rest of their overlap. Group norms would see one tile's statistics and
shift its colours, so they use the whole picture's: pass k over the tiles runs each tile up to norm k
(the earlier ones normalising with the picture's statistics) and sums that norm's input over the part
each tile owns; a last pass keeps the pixels. The passes cost a few untiled runs' compute (the early
norms are at low resolution), and the result matches an untiled run within a level or two out of 255
away from the borders.
Family-agnostic: tiles are cut in the VAE's latent space (any channel count; scale and shift are the
caller's, see tasks.images).

    mode "auto": tiled when a side is over 2048 px, or when an untiled run is estimated not to fit in the
    free memory of its device (and, on a GPU, when an untiled decode runs out of memory); "on"; "off".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from webui.core.models.offload import compute_place

TILING_MODES = ("auto", "on", "off")
ALWAYS_TILED_PX = 2048  # "auto" always tiles a picture with a side longer than this
# Bytes an untiled decode holds per output pixel per channel of the VAE's widest full-size layer (its
# first `block_out_channels`): measured about 5 on the CPU in fp32 (activations, a norm's copy, a conv
# output); 8 leaves room.
_BYTES_PER_PIXEL_CHANNEL = 8


@dataclass(frozen=True)
class VaeTiling:
    """When and how the VAE tiles. Sizes are in latent cells (x8 for pixels with today's VAEs)."""

    mode: str = "auto"
    tile: int = 64  # latent cells per tile side (512 px)
    overlap: int = 32  # latent cells shared by neighbouring tiles: a context margin, then a cross-fade

    def __post_init__(self) -> None:
        if self.mode not in TILING_MODES:
            raise ValueError(f"VAE tiling must be one of {', '.join(TILING_MODES)}, got {self.mode!r}")
        if not 0 < self.overlap < self.tile:
            raise ValueError(
                f"VAE tile overlap must be between 0 and the tile ({self.tile}), got {self.overlap}"
            )

    def wanted(self, vae: Any, width: int, height: int, batch: int = 1) -> bool:
        """Whether `batch` pictures of width x height pixels, in one untiled call, would not fit: they
        go through `vae` in tiles (or, when one picture fits, one by one: `images.decode`)."""
        if self.mode != "auto":
            return self.mode == "on"
        if max(width, height) > ALWAYS_TILED_PX:
            return True
        return tiles_needed(untiled_bytes(vae, width, height) * batch, free_bytes(compute_place(vae)[0]))


AUTO = VaeTiling()  # the default: tiles when it must


def tiles_needed(untiled: int, free: int | None) -> bool:
    """Whether "auto" tiles a picture whose untiled decode needs `untiled` bytes where `free` bytes are
    free (None: unknown, so untiled; on a GPU an untiled decode that runs out of memory is tiled then)."""
    return free is not None and untiled > free


def untiled_bytes(vae: Any, width: int, height: int) -> int:
    """An estimate of the memory an untiled decode of a width x height picture needs."""
    itemsize = compute_place(vae)[1].itemsize
    channels = int(vae.config.block_out_channels[0])
    return int(width * height * channels * itemsize * _BYTES_PER_PIXEL_CHANNEL)


def free_bytes(device: torch.device) -> int | None:
    """Free memory where `device`'s tensors live (GPU memory, or the machine's available RAM); None when
    it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)  # the driver's free memory, beside torch's cache:
        return cuda_free(free, torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def cuda_free(driver_free: int, reserved: int, allocated: int) -> int:
    """Bytes a CUDA allocation can use: what the driver has free plus what torch's caching allocator
    holds (reserved) but no tensor uses (allocated)."""
    return int(driver_free) + max(int(reserved) - int(allocated), 0)


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side of `size` cells begin: every tile - overlap cells, the last one
    flush with the end (one tile when it covers the side)."""
    if size <= tile:
        return [0]
    step = tile - overlap
    out = list(range(0, size - tile, step))
    return out + [size - tile]


def _ramp(length: int, start: int, end: int, overlap: int) -> torch.Tensor:
    """A tile's weight along one side of `length` output cells, whose neighbours overlap it by `overlap`
    cells: 0 over a context margin (a quarter of the overlap), rising over the middle half to 1, on each
    side that has a neighbour (`start` > 0 / `end` > 0 cells left beyond the tile)."""
    w = torch.ones(length)
    margin = overlap // 4
    pos = torch.arange(length, dtype=torch.float32)
    rise = ((pos - margin + 0.5) / (overlap - 2 * margin)).clamp(0, 1)
    if start:
        w = torch.minimum(w, rise)
    if end:
        w = torch.minimum(w, rise.flip(0))
    return w


_Region = tuple[float, float, float, float]  # the part of a tile it owns: top, bottom, left, right (0..1)


class _Stop(Exception):
    """Ends a measuring pass's run of one tile once the norm being measured has seen its input."""


class _Norms:
    """Takes the place of the group norms of the tiled layers, so that they normalise with the whole picture's
    statistics. A norm whose statistics are not known yet adds its input over the part of the tile the
    tile owns (`region`) to the picture's sums and stops the tile's run (`_Stop`): after one pass over the
    tiles its statistics are exact (the norms before it already used exact ones), and the next pass
    measures the next norm. The norms' own forward comes back on exit (the VAE is shared: one job at a
    time uses a loaded model)."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.norms = [m for mod in modules for m in mod.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(norm) -> (mean, var) per group
        self.measuring: tuple[int, torch.Tensor] | None = None  # id(norm), (groups, 3): count, sum, squares
        self.region: _Region = (0.0, 1.0, 0.0, 1.0)

    def __enter__(self) -> _Norms:
        for norm in self.norms:  # this object's forward in place of the norm's own, for the tiled run
            norm.forward = functools.partial(self._forward, norm)  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for norm in self.norms:
            del norm.forward

    def finish_pass(self) -> bool:
        """The measured norm's statistics from its sums; False when the pass met no unknown norm."""
        if self.measuring is None:
            return False
        key, s = self.measuring
        n, total, squares = s[:, 0], s[:, 1], s[:, 2]
        mean = total / n
        self.stats[key] = (mean, (squares / n - mean**2).clamp_min(0))
        self.measuring = None
        return True

    def _forward(self, norm: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        groups = norm.num_groups
        key = id(norm)
        if key not in self.stats:
            flat = self._owned(x).reshape(groups, -1).double()
            count = torch.full((groups,), flat.shape[1], dtype=torch.float64, device=flat.device)
            add = torch.stack([count, flat.sum(1), (flat**2).sum(1)], 1).cpu()
            if self.measuring is not None and self.measuring[0] != key:
                raise RuntimeError("tiled VAE: the group norms ran in another order in another tile")
            self.measuring = (key, add if self.measuring is None else self.measuring[1] + add)
            raise _Stop
        mean, var = self.stats[key]
        g = x.reshape(x.shape[0], groups, -1)
        m = mean.to(x.device, x.dtype)[None, :, None]
        scale = torch.rsqrt(var + norm.eps).to(x.device, x.dtype)[None, :, None]
        y = (g - m).mul_(scale).reshape(x.shape)  # one new tensor, then in place
        if norm.affine:
            shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
            y.mul_(norm.weight.view(shape)).add_(norm.bias.view(shape))
        return y

    def _owned(self, x: torch.Tensor) -> torch.Tensor:
        """The part of one image's (1, C, h, w) activations that the current tile owns, as (C, n)."""
        top, bottom, left, right = self.region
        h, w = x.shape[-2:]
        part = x[0, :, round(top * h) : round(bottom * h), round(left * w) : round(right * w)]
        return part.reshape(x.shape[1], -1)


def _owned_span(starts_: list[int], i: int, tile: int, size: int) -> tuple[float, float]:
    """The part of tile i (0..1 of its extent) it owns: up to the middles of its overlaps."""
    t = min(tile, size)
    s = starts_[i]
    a = 0.0 if i == 0 else (starts_[i - 1] + t + s) / 2
    b = float(size) if i == len(starts_) - 1 else (s + t + starts_[i + 1]) / 2
    return (a - s) / t, (b - s) / t


def _tiled(
    x: torch.Tensor,
    run: Callable[[torch.Tensor], torch.Tensor],
    out_channels: int,
    scale: Fraction,
    tile: int,
    overlap: int,
    norms: _Norms,
) -> torch.Tensor:
    """`run` over tiles of `tile` cells of `x` (1, C, H, W) overlapping by `overlap`, blended into
    (1, out_channels, H * scale, W * scale), after a pass over the tiles per group norm measures them."""
    _, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = starts(h, tile, overlap), starts(w, tile, overlap)

    def each_tile() -> Any:
        for i, y in enumerate(ys):
            for j, x0 in enumerate(xs):
                norms.region = (*_owned_span(ys, i, tile, h), *_owned_span(xs, j, tile, w))
                try:
                    yield y, x0, run(x[:, :, y : y + th, x0 : x0 + tw])
                except _Stop:
                    continue

    for _ in range(len(norms.norms) + 1):  # one pass per norm measured, one more finds them all known
        pieces = list(each_tile())
        if not norms.finish_pass():
            break
    else:
        raise RuntimeError("tiled VAE: more group norm calls than group norms")
    out_h, out_w = int(h * scale), int(w * scale)
    out = torch.zeros(1, out_channels, out_h, out_w, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, out_h, out_w, dtype=torch.float32, device=x.device)
    for y, x0, piece in pieces:
        oy, ox, oh, ow = int(y * scale), int(x0 * scale), piece.shape[-2], piece.shape[-1]
        sy = _ramp(oh, y, h - y - th, int(overlap * scale))
        sx = _ramp(ow, x0, w - x0 - tw, int(overlap * scale))
        wt = (sy[:, None] * sx[None, :]).to(out.device)[None, None]
        out[:, :, oy : oy + oh, ox : ox + ow] += piece.float() * wt
        weight[:, :, oy : oy + oh, ox : ox + ow] += wt
    return out / weight.clamp_min(1e-8)


def downscale(vae: Any) -> int:
    """Pixels per latent cell, per side, of `vae` (8 for the SD, SDXL, SD3 and Flux VAEs)."""
    return int(2 ** (len(vae.config.block_out_channels) - 1))


@torch.no_grad()
def decode_tiled(vae: Any, z: torch.Tensor, tiling: VaeTiling) -> torch.Tensor:
    """Unscaled latents (B, C, h, w) to pictures (B, 3, H, W) in -1..1: the middle block untiled, the up
    blocks tile by tile (diffusers' Decoder.forward, split at the latent size)."""
    dec = vae.decoder

    def tail(h: torch.Tensor) -> torch.Tensor:
        for block in dec.up_blocks:
            h = block(h)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))  # type: ignore[no-any-return]

    out = []
    for i in range(z.shape[0]):
        h = z[i : i + 1]
        if vae.post_quant_conv is not None:
            h = vae.post_quant_conv(h)
        h = dec.conv_in(h)  # (the VAE is on its compute device from its first call: models.offload)
        up_dtype = next(iter(dec.up_blocks.parameters())).dtype
        h = dec.mid_block(h).to(up_dtype)
        with _Norms([dec.up_blocks, dec.conv_norm_out]) as norms:
            out.append(_tiled(h, tail, 3, Fraction(downscale(vae)), tiling.tile, tiling.overlap, norms))
    return torch.cat(out).to(z.dtype)


@torch.no_grad()
def encode_tiled(vae: Any, x: torch.Tensor, tiling: VaeTiling) -> torch.Tensor:
    """Pictures (B, 3, H, W) in -1..1 to the mode of their latent distribution (unscaled): the down blocks
    tile by tile, then the middle block and the rest untiled (diffusers' Encoder.forward, split)."""
    enc = vae.encoder
    f = downscale(vae)

    def head(t: torch.Tensor) -> torch.Tensor:
        h = enc.conv_in(t)
        for block in enc.down_blocks:
            h = block(h)
        return h  # type: ignore[no-any-return]

    out = []
    for i in range(x.shape[0]):
        with _Norms([enc.conv_in, enc.down_blocks]) as norms:
            channels = int(vae.config.block_out_channels[-1])
            h = _tiled(
                x[i : i + 1],
                head,
                channels,
                Fraction(1, f),
                tiling.tile * f,
                tiling.overlap * f,
                norms,
            )
        h = enc.mid_block(h.to(x.dtype))
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
        if vae.quant_conv is not None:
            h = vae.quant_conv(h)
        mean, _ = torch.chunk(h, 2, dim=1)
        out.append(mean)
    return torch.cat(out).to(x.dtype)
