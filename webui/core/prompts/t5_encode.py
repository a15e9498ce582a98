"""Prompts for T5 (the long-text encoder of SD3 and Flux), with A1111's attention syntax.

The prompt is split into weighted runs exactly as for CLIP (`parse_attention`); each run is tokenized
on its own (no special tokens) and its tokens carry its weight, then `</s>` ends the sequence and
`<pad>` fills it to the family's length (SD3 and Flux schnell 256, Flux dev 512). T5 has no 77-token
windows, so BREAK only separates runs. After encoding, each token's output is multiplied by its weight
and the whole rescaled to its unweighted mean (A1111's "Original" emphasis, as for CLIP). A prompt
without weights tokenizes and encodes exactly as diffusers' pipelines do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from webui.core.models.offload import compute_place
from webui.core.prompts.attention import parse_attention
from webui.core.prompts.encode import _apply_weights


@dataclass(frozen=True)
class T5Tokens:
    ids: list[int]  # exactly `length` ids: the prompt's, `</s>`, then `<pad>`
    weights: list[float]
    used: int  # prompt tokens kept (before `</s>`)
    dropped: int  # prompt tokens past the length that did not fit


def t5_tokens(tokenizer: Any, text: str, length: int) -> T5Tokens:
    """Tokenize `text` for T5 with per-token weights, truncated to `length` (with `</s>`)."""
    ids: list[int] = []
    weights: list[float] = []
    for run, weight in parse_attention(text):
        if weight < 0:  # BREAK
            continue
        run_ids = tokenizer(run, add_special_tokens=False).input_ids
        ids += run_ids
        weights += [weight] * len(run_ids)
    keep = length - 1
    dropped = max(0, len(ids) - keep)
    ids, weights = ids[:keep], weights[:keep]
    used = len(ids)
    pad = length - used - 1
    return T5Tokens(
        ids + [int(tokenizer.eos_token_id)] + [int(tokenizer.pad_token_id)] * pad,
        weights + [1.0] * (pad + 1),
        used,
        dropped,
    )


@torch.no_grad()
def encode_t5(t5: Any, tokens: T5Tokens) -> torch.Tensor:
    """(1, length, width) T5 features of one prompt, weighted."""
    device = compute_place(t5)[0]
    out = t5(torch.tensor([tokens.ids], device=device))[0]
    return _apply_weights(out, tokens.weights)
