"""A prompt as the sampling loop sees it: AND parts, each scheduled over the steps, each text encoded once.

    prompt --extract_networks--> text --split_and--> [(sub-prompt, weight)]
           --prompt_schedule--> [(end_step, text)] per part --tokenize/encode (cached)--> Conditioning

At sampling step i (0-based) a part uses the first entry whose end_step >= i (A1111's rule). The loop
asks `ScheduledConditioning.at(i)`; identical texts are encoded once, and encodings are kept across
jobs in an `EncodingCache` keyed by (model, text, clip skip, embeddings available).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from webui.core import families
from webui.core.models.components import Components
from webui.core.prompts.chunks import EmbeddingMatcher, tokenize_prompt
from webui.core.prompts.encode import Conditioning, encode_tokenized, token_widths
from webui.core.prompts.flow_encode import encode_flow
from webui.core.prompts.schedule import prompt_schedule
from webui.core.prompts.syntax import extract_networks, split_and

T = TypeVar("T")


@dataclass(frozen=True)
class ScheduledPart:
    weight: float
    schedule: tuple[tuple[int, Conditioning], ...]  # (end_step, conditioning), end steps increasing

    def at(self, step: int) -> Conditioning:
        for end, cond in self.schedule:
            if step <= end:
                return cond
        return self.schedule[-1][1]


@dataclass(frozen=True)
class ScheduledConditioning:
    """One prompt over the sampling steps. `empty` (the empty prompt, one chunk) pads shorter ones."""

    parts: tuple[ScheduledPart, ...]
    empty: Conditioning
    embeddings: tuple[str, ...] = ()  # textual-inversion embeddings the prompt used

    def at(self, step: int) -> tuple[list[Conditioning], list[float]]:
        return [p.at(step) for p in self.parts], [p.weight for p in self.parts]

    @property
    def texts_encoded(self) -> int:
        return len({id(c) for p in self.parts for _, c in p.schedule})


def pad_to(cond: Conditioning, tokens: int, empty: Conditioning) -> Conditioning:
    """Append copies of the empty prompt's chunk until `cond` has `tokens` token vectors."""
    missing = tokens - cond.tokens
    if missing <= 0:
        return cond
    if missing % empty.tokens:
        raise ValueError(f"cannot pad {cond.tokens} tokens to {tokens} with chunks of {empty.tokens}")
    filler = empty.embeds.repeat(cond.embeds.shape[0], missing // empty.tokens, 1)
    return Conditioning(torch.cat([cond.embeds, filler], dim=1), cond.pooled)


class EncodingCache:
    """Least-recently-used map from an encoding's key to its result, shared by every job of an engine."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:  # also serialises encoder calls (they register temporary hooks)
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]  # type: ignore[no-any-return]
            self.misses += 1
            value = compute()
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._items)


class PromptEncoder:
    """Encodes prompts for one loaded model, with the embeddings usable on it."""

    def __init__(
        self,
        parts: Components,
        model_key: Hashable,
        cache: EncodingCache,
        embeddings: Mapping[str, Any] | None = None,
    ) -> None:
        self.parts = parts
        self.cache = cache
        widths = token_widths(parts)
        usable: dict[str, Any] = {}
        self.vectors: dict[str, list[torch.Tensor]] = {}
        for name, emb in (embeddings or {}).items():
            vecs = emb.vectors_for(widths)
            if vecs is not None:
                usable[name] = emb
                self.vectors[name] = vecs
        self.embeddings = usable
        fingerprint = hashlib.sha256(
            "\n".join(f"{n}:{getattr(e, 'shorthash', '')}" for n, e in sorted(usable.items())).encode()
        ).hexdigest()
        self._key = (model_key, str(parts.device), str(parts.dtype), widths, fingerprint)
        self.matcher = cache.get(
            ("matcher", self._key), lambda: EmbeddingMatcher(parts.tokenizer or parts.tokenizer_2, usable)
        )

    def encode(self, text: str, clip_skip: int = 1) -> tuple[Conditioning, tuple[str, ...]]:
        """A text's conditioning (all its chunks) and the embeddings it used."""
        tokenizer = self.parts.tokenizer or self.parts.tokenizer_2

        def compute() -> tuple[Conditioning, tuple[str, ...]]:
            tokenized = tokenize_prompt(text, tokenizer, self.matcher)
            if families.of(self.parts).text.t5_length:  # SD3, Flux: CLIP and T5
                cond = encode_flow(self.parts, text, tokenized, clip_skip, self.vectors)
            else:
                cond = encode_tokenized(self.parts, tokenized, clip_skip, self.vectors)
            return cond, tokenized.embeddings

        return self.cache.get(("text", self._key, text, clip_skip), compute)

    def schedule(
        self, prompt: str, steps: int, clip_skip: int = 1, *, multicond: bool = True
    ) -> ScheduledConditioning:
        """The prompt's conditioning for every step (`multicond`: honour `AND`; off for negatives)."""
        text, _networks = extract_networks(prompt)
        subprompts = split_and(text) if multicond else [(text, 1.0)]
        used: list[str] = []
        parts = []
        for sub, weight in subprompts:
            entries = []
            for end, scheduled_text in prompt_schedule(sub, steps):
                cond, names = self.encode(scheduled_text, clip_skip)
                used.extend(n for n in names if n not in used)
                entries.append((end, cond))
            parts.append(ScheduledPart(weight, tuple(entries)))
        empty, _ = self.encode("", clip_skip)
        return ScheduledConditioning(tuple(parts), empty, tuple(used))


def model_key(path: object, size: int, mtime_ns: int) -> Hashable:
    """What identifies a model's weights for the cache (same file, same bytes)."""
    return (str(path), size, mtime_ns)


def step_groups(
    cond: ScheduledConditioning, uncond: ScheduledConditioning, step: int, n: int
) -> tuple[list[Conditioning], list[float]]:
    """[uncond, cond_1, ..., cond_k] for step `step`, padded to one length and repeated for n images."""
    conds, weights = cond.at(step)
    groups: Sequence[Conditioning] = [uncond.at(step)[0][0], *conds]
    longest = max(c.tokens for c in groups)
    padded = [pad_to(c, longest, cond.empty).repeat(n) for c in groups]
    return padded, weights
