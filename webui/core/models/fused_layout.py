"""Renaming rules between an original (research-code) layout and diffusers' names, for transformers
whose original files fuse projections that diffusers keeps apart (Flux, SD3's MMDiT).

A rule names one original tensor and the diffusers tensors stacked on dim 0 to make it; `swap_halves`
marks adaptive-norm projections stored as (shift, scale) in the original and (scale, shift) in diffusers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Fused:
    original: str
    parts: tuple[str, ...]  # diffusers names, stacked on dim 0 in this order
    swap_halves: bool = False


def linear(original: str, diffusers: str, swap: bool = False) -> list[Fused]:
    """A Linear (or conv) layer's weight and bias, renamed."""
    return [Fused(f"{original}.{p}", (f"{diffusers}.{p}",), swap) for p in ("weight", "bias")]


def fused_linear(original: str, parts: Sequence[str]) -> list[Fused]:
    """A Linear layer whose output rows are the stacked outputs of several diffusers layers."""
    return [Fused(f"{original}.{p}", tuple(f"{d}.{p}" for d in parts)) for p in ("weight", "bias")]


def swap_halves(t: Tensor) -> Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def depth(names: Mapping[str, object], marker: str) -> int:
    """How many numbered blocks `marker.N.` the names hold."""
    blocks = {int(k[len(marker) :].split(".")[0]) for k in names if k.startswith(marker)}
    return max(blocks) + 1 if blocks else 0


def to_original(rules: Sequence[Fused], state_dict: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """diffusers weights -> original names; every diffusers tensor must be covered by a rule."""
    out: dict[str, Tensor] = {}
    for rule in rules:
        parts = [state_dict[p] for p in rule.parts]
        t = torch.cat(parts) if len(parts) > 1 else parts[0]
        out[rule.original] = swap_halves(t) if rule.swap_halves else t
    extra = sorted(set(state_dict) - {p for r in rules for p in r.parts})
    if extra:
        raise ValueError(f"{what} weights this layout does not know: {', '.join(extra[:5])}")
    return out


def from_original(
    rules: Sequence[Fused],
    checkpoint: Mapping[str, Tensor],
    split_sizes: Callable[[Fused, Tensor], list[int]],
    what: str,
) -> dict[str, Tensor]:
    """Original weights (prefix already removed) -> diffusers names, splitting fused tensors."""
    missing = [r.original for r in rules if r.original not in checkpoint]
    if missing:
        raise ValueError(f"{what} is missing {missing[0]} (and {len(missing) - 1} more)")
    out: dict[str, Tensor] = {}
    for rule in rules:
        t = checkpoint[rule.original]
        t = swap_halves(t) if rule.swap_halves else t
        if len(rule.parts) == 1:
            out[rule.parts[0]] = t
            continue
        pieces = torch.split(t, split_sizes(rule, t), dim=0)
        for name, piece in zip(rule.parts, pieces, strict=True):
            out[name] = piece.clone()
    return out
