"""CodeFormer (the network of the released `codeformer.pth`, v0.1.0) in plain torch.

Published structure (Zhou et al., "Towards Robust Blind Face Restoration with Codebook Lookup
Transformer", NeurIPS 2022, and the key names of the released file, whose weights sit under
`params_ema`): a VQGAN-style encoder takes the 512x512 face down to a 16x16 grid of 256-wide features; a
transformer (9 pre-norm layers, 512 wide, 8 heads, a learned position embedding for the 256 tokens)
predicts for every token which of the 1024 codebook entries it is; the codebook vectors, given the
encoder output's mean and spread (AdaIN), go through the VQGAN decoder ("generator"). With fidelity
weight w > 0, the controllable feature transformation (`fuse_convs_dict`) adds w * (decoder * scale +
shift) to the decoder at 32, 64, 128 and 256 px, scale and shift made from the encoder's features there:
w = 0 is the codebook's face alone (strongest restoration), w = 1 keeps most of the input.

Modules and their state-dict names:

    encoder.blocks.{i}        conv, then per size (512 .. 16 px) two ResBlocks (norm1, conv1, norm2,
                              conv2, conv_out 1x1 where the width changes) and a Downsample (conv,
                              stride 2); AttnBlocks (norm, q, k, v, proj_out) at 16 px; ResBlock, AttnBlock,
                              ResBlock; GroupNorm; conv to the codebook width
    quantize.embedding        the codebook (entries x width)
    generator.blocks.{i}      the mirror image: conv, ResBlock, AttnBlock, ResBlock, per size two
                              ResBlocks and an Upsample (nearest 2x, conv), GroupNorm, conv to RGB
    position_emb, feat_emb    the tokens' position embedding; codebook width -> transformer width
    ft_layers.{i}             self_attn (in_proj_weight/bias, out_proj), linear1, linear2, norm1, norm2
    idx_pred_layer            LayerNorm, Linear without bias: a logit per codebook entry
    fuse_convs_dict.{size}    encode_enc (ResBlock over encoder and decoder features), scale, shift

`CodeFormerConfig.from_state_dict` reads the widths back from a file's tensor shapes (the released file and
the tiny test fixture go through one path); the layout (levels, blocks, 16x16 tokens) is fixed, and
loading is strict (every key and shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from webui.core.faces.strict import load_on_meta

SIZE = 512  # the face crop the network takes and gives
TOKENS = 256  # 16 x 16: the encoder's output grid
CH_MULT = (1, 2, 2, 4, 4, 8)  # channels per level (512, 256, 128, 64, 32, 16 px) in units of nf
HEADS = 8  # not visible in the weights; the released network's
SIZES = ("16", "32", "64", "128", "256", "512")
# Where the fuse blocks read and write, as indices into encoder.blocks / generator.blocks: the encoder
# after the second ResBlock of each size, the generator after the first (at 16 px, after the second).
ENCODER_TAP = {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
GENERATOR_TAP = {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}
SUPPORTED = "the released codeformer.pth (v0.1.0) layout"


@dataclass(frozen=True)
class CodeFormerConfig:
    """The widths of a CodeFormer network (defaults: the released codeformer.pth)."""

    nf: int = 64  # the first level's channels
    emb_dim: int = 256  # codebook vector width
    codebook_size: int = 1024
    dim_embd: int = 512  # transformer width
    n_layers: int = 9
    dim_mlp: int = 1024
    connect_list: tuple[str, ...] = ("32", "64", "128", "256")

    @property
    def norm_groups(self) -> int:
        """GroupNorm's groups: 32, as released; a network narrower than 32 channels (the test fixture) has
        one group per channel of its first level."""
        return min(32, self.nf)

    def channels(self, size: str) -> int:
        return self.nf * CH_MULT[SIZES[::-1].index(size)]

    def validate(self) -> None:
        if min(self.nf, self.emb_dim, self.codebook_size, self.dim_embd, self.n_layers, self.dim_mlp) < 1:
            raise ValueError(f"{self} gives a layer without channels")
        if self.nf % self.norm_groups:
            raise ValueError(f"{self.nf} channels do not split into {self.norm_groups} norm groups")
        if self.dim_embd % HEADS:
            raise ValueError(f"transformer width {self.dim_embd} does not split into {HEADS} heads")
        if not set(self.connect_list) <= set(SIZES):
            raise ValueError(f"fuse sizes {self.connect_list} are not among {', '.join(SIZES)}")

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> CodeFormerConfig:
        """The configuration whose network has these tensors' shapes; KeyError/ValueError when the
        tensors are not a CodeFormer network."""
        tokens, dim_embd = state["position_emb"].shape
        if tokens != TOKENS:
            raise ValueError(f"position_emb has {tokens} rows, not {TOKENS} (a 16x16 grid at {SIZE} px)")
        codebook_size, emb_dim = state["quantize.embedding.weight"].shape
        layers = {int(k.split(".")[1]) for k in state if k.startswith("ft_layers.")}
        if not layers or layers != set(range(len(layers))):
            raise KeyError("ft_layers")
        config = cls(
            nf=int(state["encoder.blocks.0.weight"].shape[0]),
            emb_dim=int(emb_dim),
            codebook_size=int(codebook_size),
            dim_embd=int(dim_embd),
            n_layers=len(layers),
            dim_mlp=int(state["ft_layers.0.linear1.weight"].shape[0]),
            connect_list=tuple(s for s in SIZES if f"fuse_convs_dict.{s}.scale.0.weight" in state),
        )
        config.validate()
        return config


class ResBlock(nn.Module):
    """GroupNorm, swish, 3x3 conv, twice, plus the input (through a 1x1 conv where the width changes)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_out = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_out is None else self.conv_out(x)
        out: torch.Tensor = h + skip
        return out


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels (1x1 conv projections), plus the input."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)
        out: torch.Tensor = x + self.proj_out(a.transpose(1, 2).reshape(b, c, h, w))
        return out


class Downsample(nn.Module):
    """Pad one pixel right and below, then a 3x3 conv with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(F.pad(x, (0, 1, 0, 1)))
        return out


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class Blocks(nn.Module):
    """The encoder's or the generator's list of blocks (state-dict names `<part>.blocks.{i}`)."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def encoder_blocks(c: CodeFormerConfig) -> list[nn.Module]:
    g = c.norm_groups
    blocks: list[nn.Module] = [nn.Conv2d(3, c.nf, 3, 1, 1)]
    cin = c.nf
    for level, mult in enumerate(CH_MULT):
        cout = c.nf * mult
        for _ in range(2):
            blocks.append(ResBlock(cin, cout, g))
            cin = cout
            if level == len(CH_MULT) - 1:  # 16 px
                blocks.append(AttnBlock(cin, g))
        if level != len(CH_MULT) - 1:
            blocks.append(Downsample(cin))
    blocks += [ResBlock(cin, cin, g), AttnBlock(cin, g), ResBlock(cin, cin, g)]
    blocks += [nn.GroupNorm(g, cin, eps=1e-6), nn.Conv2d(cin, c.emb_dim, 3, 1, 1)]
    return blocks


def generator_blocks(c: CodeFormerConfig) -> list[nn.Module]:
    g = c.norm_groups
    cin = c.nf * CH_MULT[-1]
    blocks: list[nn.Module] = [nn.Conv2d(c.emb_dim, cin, 3, 1, 1)]
    blocks += [ResBlock(cin, cin, g), AttnBlock(cin, g), ResBlock(cin, cin, g)]
    for level in reversed(range(len(CH_MULT))):
        cout = c.nf * CH_MULT[level]
        for _ in range(2):
            blocks.append(ResBlock(cin, cout, g))
            cin = cout
            if level == len(CH_MULT) - 1:
                blocks.append(AttnBlock(cin, g))
        if level != 0:
            blocks.append(Upsample(cin))
    blocks += [nn.GroupNorm(g, cin, eps=1e-6), nn.Conv2d(cin, 3, 3, 1, 1)]
    return blocks


class Codebook(nn.Module):
    def __init__(self, entries: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(entries, width)

    def lookup(self, indices: torch.Tensor, side: int) -> torch.Tensor:
        """(B, side*side) entry numbers -> (B, width, side, side) codebook vectors."""
        b = indices.shape[0]
        vectors: torch.Tensor = self.embedding.weight[indices.reshape(-1)]
        return vectors.view(b, side, side, -1).permute(0, 3, 1, 2).contiguous()


class TransformerSALayer(nn.Module):
    """Pre-norm self-attention (position embedding added to queries and keys) and a GELU MLP."""

    def __init__(self, dim: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, HEADS)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        qk = h + pos
        x = x + self.self_attn(qk, qk, value=h, need_weights=False)[0]
        out: torch.Tensor = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
        return out


def _conv_lrelu_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, 1, 1))


class FuseSFT(nn.Module):
    """The controllable feature transformation at one size: decoder + w * (decoder * scale + shift)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels, groups)
        self.scale = _conv_lrelu_conv(channels, channels)
        self.shift = _conv_lrelu_conv(channels, channels)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        h = self.encode_enc(torch.cat([enc, dec], dim=1))
        out: torch.Tensor = dec + w * (dec * self.scale(h) + self.shift(h))
        return out


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`content` given `style`'s per-channel mean and standard deviation (unbiased variance + eps)."""

    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.flatten(2)
        return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class CodeFormer(nn.Module):
    """x: (B, 3, 512, 512) RGB in [-1, 1], w the fidelity weight -> the restored face, same shape."""

    def __init__(self, config: CodeFormerConfig | None = None) -> None:
        super().__init__()
        c = config or CodeFormerConfig()
        c.validate()
        self.config = c
        self.encoder = Blocks(encoder_blocks(c))
        self.quantize = Codebook(c.codebook_size, c.emb_dim)
        self.generator = Blocks(generator_blocks(c))
        self.position_emb = nn.Parameter(torch.zeros(TOKENS, c.dim_embd))
        self.feat_emb = nn.Linear(c.emb_dim, c.dim_embd)
        self.ft_layers = nn.Sequential(
            *(TransformerSALayer(c.dim_embd, c.dim_mlp) for _ in range(c.n_layers))
        )
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(c.dim_embd), nn.Linear(c.dim_embd, c.codebook_size, bias=False)
        )
        self.fuse_convs_dict = nn.ModuleDict(
            {s: FuseSFT(c.channels(s), c.norm_groups) for s in c.connect_list}
        )

    def forward(self, x: torch.Tensor, w: float = 0.5, use_adain: bool = True) -> torch.Tensor:
        if x.shape[1:] != (3, SIZE, SIZE):
            raise ValueError(f"CodeFormer takes (B, 3, {SIZE}, {SIZE}) images, not {tuple(x.shape)}")
        connect = self.config.connect_list
        taps = {ENCODER_TAP[s]: s for s in connect}
        skips: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in taps:
                skips[taps[i]] = x
        lq = x  # (B, emb_dim, 16, 16)
        tokens = self.feat_emb(lq.flatten(2).permute(2, 0, 1))  # (HW, B, dim): sequence first
        pos = self.position_emb.unsqueeze(1)
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        logits = self.idx_pred_layer(tokens)  # (HW, B, entries)
        codes = logits.argmax(dim=2).transpose(0, 1)  # (B, HW): the likeliest entry per token
        h = self.quantize.lookup(codes, lq.shape[-1])
        if use_adain:
            h = adain(h, lq)
        fuse_at = {GENERATOR_TAP[s]: s for s in connect}
        for i, block in enumerate(self.generator.blocks):
            h = block(h)
            if i in fuse_at and w > 0:
                size = fuse_at[i]
                h = self.fuse_convs_dict[size](skips[size], h, w)
        return h


def build(state: dict[str, torch.Tensor]) -> CodeFormer:
    """The network these tensors are the weights of, every key and shape checked (strict).

    ValueError says what does not fit (a file of another architecture)."""
    try:
        config = CodeFormerConfig.from_state_dict(state)
    except KeyError as e:
        raise ValueError(f"not a CodeFormer network ({SUPPORTED}): no {e} tensor") from e
    except (IndexError, ValueError, TypeError) as e:  # a tensor of another rank or size
        raise ValueError(f"not a CodeFormer network ({SUPPORTED}): {e}") from e
    return load_on_meta(lambda: CodeFormer(config), state, f"a CodeFormer network ({SUPPORTED})")
