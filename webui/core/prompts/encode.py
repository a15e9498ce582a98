"""Text to conditioning: tokenize, run the text encoder(s), pick the layer clip skip asks for.

This is the plain path (one 77-token window per prompt); attention weights, long-prompt chunking and
prompt editing build on it in the prompt-language issue.

- SD1/SD2: clip skip 1 is the encoder's last hidden state (after its final layer norm); clip skip N
  takes the hidden state N-1 layers earlier and applies the final layer norm (A1111's definition).
- SDXL: both encoders' penultimate hidden states (no final norm), concatenated on the feature axis, and
  the second encoder's projected pooled output; clip skip N moves both N-1 layers further back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from webui.core.models.components import Components


@dataclass(frozen=True)
class Conditioning:
    embeds: torch.Tensor  # (batch, tokens, width)
    pooled: torch.Tensor | None = None  # SDXL: (batch, projection)

    def repeat(self, n: int) -> Conditioning:
        """The same conditioning for n images (encode once, use n times)."""
        pooled = self.pooled.repeat(n, 1) if self.pooled is not None else None
        return Conditioning(self.embeds.repeat(n, 1, 1), pooled)


def _ids(tokenizer: Any, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    out = tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    ids: torch.Tensor = out.input_ids
    return ids.to(device)


@torch.no_grad()
def encode_prompts(parts: Components, texts: Sequence[str], clip_skip: int = 1) -> Conditioning:
    """Encode a batch of prompt texts for the model `parts`."""
    device, dtype = parts.device, parts.dtype
    if parts.text_encoder_2 is None:  # SD1 / SD2
        te = parts.text_encoder
        out = te(_ids(parts.tokenizer, texts, device), output_hidden_states=clip_skip > 1)
        hidden = (
            te.final_layer_norm(out.hidden_states[-clip_skip]) if clip_skip > 1 else out.last_hidden_state
        )
        return Conditioning(hidden.to(dtype))
    layers = -(clip_skip + 1)  # penultimate for clip skip 1
    embeds = []
    if parts.text_encoder is not None:
        out1 = parts.text_encoder(_ids(parts.tokenizer, texts, device), output_hidden_states=True)
        embeds.append(out1.hidden_states[layers])
    out2 = parts.text_encoder_2(_ids(parts.tokenizer_2, texts, device), output_hidden_states=True)
    embeds.append(out2.hidden_states[layers])
    pooled = out2.text_embeds
    return Conditioning(torch.cat(embeds, dim=-1).to(dtype), pooled.to(dtype))
