"""Text to conditioning: run the text encoder(s) over 77-token chunks and pick the layer clip skip asks for.

What clip skip means and which encoder gives the pooled vector is the family's (`families.base.
TextConditioning`):

- SD1/SD2: clip skip 1 is the encoder's last hidden state (after its final layer norm); clip skip N
  takes the hidden state N-1 layers earlier and applies the final layer norm (A1111's definition).
- SDXL: both encoders' penultimate hidden states (no final norm), concatenated on the feature axis, and
  the second encoder's projected pooled output (of the first chunk); clip skip N moves both N-1 layers
  further back.

Attention weights (A1111 "Original"): each chunk's output is multiplied token-wise by its weights and
then rescaled so its mean equals the unweighted mean. Embedding vectors replace their placeholder
tokens' input embeddings. Each chunk is encoded on its own (batch of one), so a prompt's encoding does not
depend on what else is encoded with it.

`encode_prompts` is the plain path (one truncated 77-token window per text), kept for callers that
compare with diffusers' own prompt encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from webui.core import families
from webui.core.models.components import Components
from webui.core.prompts.chunks import Chunk, TokenizedPrompt, with_pad_id


@dataclass(frozen=True)
class Conditioning:
    embeds: torch.Tensor  # (batch, tokens, width)
    pooled: torch.Tensor | None = None  # SDXL: (batch, projection)

    def repeat(self, n: int) -> Conditioning:
        """The same conditioning for n images (encode once, use n times)."""
        pooled = self.pooled.repeat(n, 1) if self.pooled is not None else None
        return Conditioning(self.embeds.repeat(n, 1, 1), pooled)

    @property
    def tokens(self) -> int:
        return int(self.embeds.shape[1])


def _named_encoders(parts: Components) -> list[tuple[str, Any, Any]]:
    """(component, tokenizer, text encoder) of a model, in the order their outputs are concatenated."""
    return [
        (e.component, getattr(parts, e.tokenizer), getattr(parts, e.component))
        for e in families.of(parts).text.encoders
        if getattr(parts, e.component) is not None
    ]


def encoders(parts: Components) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs of a model, in the order their outputs are concatenated."""
    return [(tok, te) for _, tok, te in _named_encoders(parts)]


def token_widths(parts: Components) -> tuple[int, ...]:
    """The input-embedding width of each text encoder (what an embedding's vectors must match)."""
    return tuple(int(te.get_input_embeddings().embedding_dim) for _, te in encoders(parts))


def _run(te: Any, ids: torch.Tensor, vectors: Sequence[tuple[int, torch.Tensor]]) -> Any:
    """The encoder's output with hidden states; `vectors` replace input embeddings at (offset, (n, w))."""
    if not vectors:
        return te(ids, output_hidden_states=True)

    def replace(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for offset, vec in vectors:
            n = min(vec.shape[0], output.shape[1] - offset - 1)
            output[:, offset : offset + n] = vec[:n].to(device=output.device, dtype=output.dtype)
        return output

    handle = te.get_input_embeddings().register_forward_hook(replace)
    try:
        return te(ids, output_hidden_states=True)
    finally:
        handle.remove()


def _apply_weights(z: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    if all(w == 1.0 for w in weights):
        return z
    original_mean = z.mean()
    w = torch.tensor(weights, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
    z = z * w
    return z * (original_mean / z.mean())


@torch.no_grad()
def encode_chunk(
    parts: Components,
    chunk: Chunk,
    clip_skip: int = 1,
    vectors: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> Conditioning:
    """One 77-token chunk -> (1, 77, width) embeddings (+ pooled for SDXL)."""
    device, dtype = parts.device, parts.dtype
    text = families.of(parts).text
    penultimate = text.hidden_layer == "penultimate"
    layer = -(clip_skip + 1) if penultimate else -clip_skip
    pooled_from = {e.component for e in text.encoders if e.pooled}
    outs: list[torch.Tensor] = []
    pooled = None
    for k, (name, tok, te) in enumerate(_named_encoders(parts)):
        ids = with_pad_id(chunk.tokens, int(tok.eos_token_id), int(tok.pad_token_id))
        fixes = [(f.offset, (vectors or {})[f.name][k]) for f in chunk.fixes if f.name in (vectors or {})]
        out = _run(te, torch.tensor([ids], device=device), fixes)
        if name in pooled_from:
            pooled = out.text_embeds
        if penultimate:
            z = out.hidden_states[layer]
        else:
            z = te.final_layer_norm(out.hidden_states[layer]) if clip_skip > 1 else out.last_hidden_state
        outs.append(_apply_weights(z, chunk.weights))
    embeds = torch.cat(outs, dim=-1).to(dtype)
    return Conditioning(embeds, pooled.to(dtype) if pooled is not None else None)


def encode_tokenized(
    parts: Components,
    prompt: TokenizedPrompt,
    clip_skip: int = 1,
    vectors: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> Conditioning:
    """Every chunk of a prompt, concatenated on the token axis; SDXL's pooled output of the first."""
    encoded = [encode_chunk(parts, c, clip_skip, vectors) for c in prompt.chunks]
    embeds = torch.cat([c.embeds for c in encoded], dim=1)
    return Conditioning(embeds, encoded[0].pooled)


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
    """Encode a batch of plain texts (no prompt syntax, first 75 tokens), as diffusers does."""
    device, dtype = parts.device, parts.dtype
    if families.of(parts).text.hidden_layer == "last":  # SD1 / SD2
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
