"""Text to conditioning for the flow-matching families (SD3 / SD3.5, Flux): CLIP plus T5.

    SD3:  [CLIP-L penultimate ++ CLIP-G penultimate (features), zero-padded to T5's width ; T5 tokens]
          on the sequence axis; pooled = CLIP-L pooled ++ CLIP-G projected pooled
    Flux: T5 tokens only; pooled = CLIP-L's pooled output

as diffusers' StableDiffusion3Pipeline and FluxPipeline build them (what the family says:
`TextConditioning.clip_in_sequence`, `t5_length`). CLIP reads the prompt's first chunk (75 tokens, as
diffusers truncates) with A1111 weights and embeddings; T5 reads the whole prompt up to its length
with A1111 weights (`prompts.t5_encode`). Clip skip N moves the CLIP layer N-1 further back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from webui.core import families
from webui.core.models.components import Components
from webui.core.models.offload import compute_place
from webui.core.prompts.chunks import TokenizedPrompt, with_pad_id
from webui.core.prompts.encode import Conditioning, _apply_weights, _named_encoders, _run
from webui.core.prompts.syntax import extract_networks
from webui.core.prompts.t5_encode import encode_t5, t5_tokens


@torch.no_grad()
def encode_flow(
    parts: Components,
    text: str,
    tokenized: TokenizedPrompt,
    clip_skip: int = 1,
    vectors: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> Conditioning:
    """One prompt's (1, tokens, width) embeddings and (1, pooled) vector."""
    conditioning = families.of(parts).text
    chunk = tokenized.chunks[0]
    hidden: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []
    for k, (_name, tok, te) in enumerate(_named_encoders(parts)):
        ids = with_pad_id(chunk.tokens, int(tok.eos_token_id), int(tok.pad_token_id))
        fixes = [(f.offset, (vectors or {})[f.name][k]) for f in chunk.fixes if f.name in (vectors or {})]
        device = compute_place(te)[0]
        out = _run(te, torch.tensor([ids], device=device), fixes)
        vec = getattr(out, "text_embeds", None)
        pooled.append((vec if vec is not None else out.pooler_output).to(parts.device))
        if conditioning.clip_in_sequence:
            z = out.hidden_states[-(clip_skip + 1)]
            hidden.append(_apply_weights(z, chunk.weights).to(parts.device))
    t5 = encode_t5(parts.text_encoder_3, t5_tokens(parts.tokenizer_3, text, conditioning.t5_length))
    embeds = t5.to(parts.device)
    if hidden:
        clip = torch.cat(hidden, dim=-1)
        clip = F.pad(clip, (0, embeds.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip.to(embeds.dtype), embeds], dim=-2)
    return Conditioning(embeds.to(parts.dtype), torch.cat(pooled, dim=-1).to(parts.dtype))


def t5_overflow_warnings(parts: Components, label: str, prompt: str) -> tuple[str, ...]:
    """A warning when a prompt has more T5 tokens than the model reads (none for models without T5)."""
    length = families.of(parts).text.t5_length
    if not length:
        return ()
    text, _networks = extract_networks(prompt)
    dropped = t5_tokens(parts.tokenizer_3, text, length).dropped
    if not dropped:
        return ()
    return (
        f"the {label} is {length - 1 + dropped} T5 tokens long; this {parts.label} model reads "
        f"{length - 1}: the last {dropped} are not used",
    )
