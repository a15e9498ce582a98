"""Weighted text to 77-token chunks, as A1111 builds them.

CLIP reads 77 tokens: BOS, 75 prompt tokens, EOS (then padding). A longer prompt is cut into chunks
of 75 that are encoded separately and concatenated. Rules (A1111 v1.10):

- each attention run (`parse_attention`) is tokenized on its own, without BOS/EOS;
- when a chunk is full and a comma lies within its last `comma_backtrack` (20) tokens, the chunk ends
  after that comma and the tokens after it move on to the next chunk;
- `BREAK` ends the current chunk (padding it);
- a textual-inversion embedding written in the prompt (its name's tokens) becomes that embedding's
  vectors, never split across chunks;
- padding is EOS; encoders trained with another pad id (OpenCLIP: 0) get that id after the first EOS.

An empty prompt is one chunk of BOS, EOS and padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webui.core.prompts.attention import parse_attention

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20


class EmbeddingLike(Protocol):
    name: str

    @property
    def vector_count(self) -> int: ...


@dataclass(frozen=True)
class Fix:
    """An embedding's vectors go at `offset` (within the chunk's 77 tokens, BOS counted)."""

    offset: int
    name: str
    count: int


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)  # 77 ids once closed
    weights: list[float] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)


@dataclass(frozen=True)
class TokenizedPrompt:
    chunks: tuple[Chunk, ...]
    embeddings: tuple[str, ...]  # names used, in order of first use
    token_count: int  # prompt tokens (A1111's "x/75" counter)


class EmbeddingMatcher:
    """Finds embedding names in a token stream: longest match first, as A1111 does."""

    def __init__(self, tokenizer: Any, embeddings: Mapping[str, EmbeddingLike]) -> None:
        self._by_first: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        self.embeddings = dict(embeddings)
        for name in embeddings:
            ids = tuple(tokenizer(name, add_special_tokens=False).input_ids)
            if ids:
                self._by_first.setdefault(ids[0], []).append((ids, name))
        for options in self._by_first.values():
            options.sort(key=lambda o: -len(o[0]))

    def match(self, tokens: Sequence[int], position: int) -> tuple[str, int] | None:
        """(embedding name, tokens its name takes) when one starts at `position`."""
        for ids, name in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return name, len(ids)
        return None


def _comma_id(tokenizer: Any) -> int:
    return int(tokenizer.get_vocab()[",</w>"])


def tokenize_prompt(
    text: str,
    tokenizer: Any,
    matcher: EmbeddingMatcher | None = None,
    *,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> TokenizedPrompt:
    """Chunks of 77 ids (BOS + 75 + EOS, EOS-padded) with per-token weights and embedding fixes."""
    bos, eos = int(tokenizer.bos_token_id), int(tokenizer.eos_token_id)
    comma = _comma_id(tokenizer)
    runs = parse_attention(text)
    texts = [t for t, w in runs if not (t == "BREAK" and w == -1)]
    tokenized = iter(tokenizer(texts, add_special_tokens=False).input_ids if texts else [])
    chunks: list[Chunk] = []
    used: list[str] = []
    chunk = Chunk()
    last_comma = -1
    token_count = 0

    def close(is_last: bool = False) -> None:
        nonlocal chunk, last_comma, token_count
        token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [bos, *chunk.tokens, *([eos] * pad), eos]
        chunk.weights = [1.0, *chunk.weights, *([1.0] * pad), 1.0]
        chunk.fixes = [Fix(f.offset + 1, f.name, f.count) for f in chunk.fixes]
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for run_text, weight in runs:
        if run_text == "BREAK" and weight == -1:
            close()
            continue
        tokens = list(next(tokenized))
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (
                comma_backtrack
                and len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_backtrack
            ):
                cut = last_comma + 1
                moved = (chunk.tokens[cut:], chunk.weights[cut:])
                kept_fixes = [f for f in chunk.fixes if f.offset < cut]
                moved_fixes = [Fix(f.offset - cut, f.name, f.count) for f in chunk.fixes if f.offset >= cut]
                chunk.tokens, chunk.weights, chunk.fixes = chunk.tokens[:cut], chunk.weights[:cut], kept_fixes
                close()
                chunk.tokens, chunk.weights = list(moved[0]), list(moved[1])
                chunk.fixes = moved_fixes
            if len(chunk.tokens) == CHUNK_LENGTH:
                close()
            found = matcher.match(tokens, position) if matcher is not None else None
            if found is None:
                chunk.tokens.append(token)
                chunk.weights.append(weight)
                position += 1
                continue
            name, name_length = found
            count = min(matcher.embeddings[name].vector_count, CHUNK_LENGTH) if matcher else 0
            if len(chunk.tokens) + count > CHUNK_LENGTH:
                close()
            chunk.fixes.append(Fix(len(chunk.tokens), name, count))
            chunk.tokens.extend([0] * count)
            chunk.weights.extend([weight] * count)
            if name not in used:
                used.append(name)
            position += name_length
    if chunk.tokens or not chunks:
        close(is_last=True)
    return TokenizedPrompt(tuple(chunks), tuple(used), token_count)


def with_pad_id(tokens: Sequence[int], eos: int, pad: int) -> list[int]:
    """The ids an encoder trained with `pad` sees: everything after the first EOS becomes `pad`."""
    out = list(tokens)
    if pad == eos or eos not in out:
        return out
    first = out.index(eos)
    return out[: first + 1] + [pad] * (len(out) - first - 1)
