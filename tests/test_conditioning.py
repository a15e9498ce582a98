"""Chunking and encoding: 75-token chunks, comma backtracking, BREAK, weights with mean restore, clip skip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from webui.core.models.components import Components, Precision
from webui.core.models.loader import load_model
from webui.core.models.tokenizer import clip_tokenizer
from webui.core.prompts.chunks import CHUNK_LENGTH, EmbeddingMatcher, tokenize_prompt, with_pad_id
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder, pad_to
from webui.core.prompts.encode import encode_chunk, encode_prompts, encode_tokenized

BOS, EOS, COMMA = 49406, 49407, 267


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return clip_tokenizer()


@pytest.fixture(scope="module")
def models(tiny_files: dict[str, Path]) -> dict[str, Components]:
    return {arch: load_model(path, Precision()) for arch, path in tiny_files.items()}


def _ids(tok, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(tok(text, add_special_tokens=False).input_ids)


def test_short_prompt_is_one_chunk_with_bos_eos_and_eos_padding(tok) -> None:  # type: ignore[no-untyped-def]
    p = tokenize_prompt("a red apple", tok)
    ids = _ids(tok, "a red apple")
    assert len(p.chunks) == 1 and p.token_count == len(ids) == 3
    c = p.chunks[0]
    assert c.tokens == [BOS, *ids, *[EOS] * (CHUNK_LENGTH - 3), EOS]
    assert len(c.tokens) == len(c.weights) == 77
    assert c.weights == [1.0] * 77


def test_empty_prompt_is_one_chunk(tok) -> None:  # type: ignore[no-untyped-def]
    p = tokenize_prompt("", tok)
    assert [c.tokens for c in p.chunks] == [[BOS] + [EOS] * 76]
    assert p.token_count == 0


def test_weights_follow_attention_runs(tok) -> None:  # type: ignore[no-untyped-def]
    c = tokenize_prompt("a (red:1.5) [apple]", tok).chunks[0]
    assert c.tokens[1:4] == _ids(tok, "a") + _ids(tok, "red") + _ids(tok, "apple")
    assert c.weights[1:4] == [1.0, 1.5, pytest.approx(1 / 1.1)]


def test_200_tokens_make_3_chunks_in_order(tok) -> None:  # type: ignore[no-untyped-def]
    words = [f"w{i}" for i in range(200)]  # no commas: plain cuts at 75
    text = " ".join(words)
    ids = _ids(tok, text)
    p = tokenize_prompt(text, tok)
    assert len(p.chunks) == -(-len(ids) // 75) >= 3
    flat = [t for c in p.chunks for t in c.tokens[1:-1] if t != EOS]
    assert flat == ids
    for c in p.chunks:
        assert c.tokens[0] == BOS and c.tokens[-1] == EOS and len(c.tokens) == 77


def test_comma_within_20_tokens_of_the_end_moves_the_tail_to_the_next_chunk(tok) -> None:  # type: ignore[no-untyped-def]
    head = " ".join(["cat"] * 70)  # 70 tokens, then a comma at position 70
    tail = " ".join(["dog"] * 10)
    p = tokenize_prompt(f"{head}, {tail}", tok)
    first, second = p.chunks[0].tokens, p.chunks[1].tokens
    assert first[1:72] == [_ids(tok, "cat")[0]] * 70 + [COMMA]
    assert first[72:] == [EOS] * 5  # cut after the comma, padded
    assert second[1:11] == [_ids(tok, "dog")[0]] * 10


def test_comma_further_back_than_20_tokens_does_not_move_anything(tok) -> None:  # type: ignore[no-untyped-def]
    p = tokenize_prompt(" ".join(["cat"] * 50) + ", " + " ".join(["dog"] * 40), tok)
    assert p.chunks[0].tokens[52:76] == [_ids(tok, "dog")[0]] * 24  # filled to 75, cut there
    assert p.chunks[1].tokens[1:17] == [_ids(tok, "dog")[0]] * 16


def test_break_starts_a_new_chunk(tok) -> None:  # type: ignore[no-untyped-def]
    p = tokenize_prompt("a cat BREAK a dog", tok)
    assert len(p.chunks) == 2
    assert p.chunks[0].tokens[1:3] == _ids(tok, "a cat") and p.chunks[0].tokens[3] == EOS
    assert p.chunks[1].tokens[1:3] == _ids(tok, "a dog")


def test_openclip_pad_id_after_the_first_eos() -> None:
    assert with_pad_id([BOS, 5, EOS, EOS, EOS], EOS, 0) == [BOS, 5, EOS, 0, 0]
    assert with_pad_id([BOS, 5, EOS, EOS], EOS, EOS) == [BOS, 5, EOS, EOS]


class _FakeEmbedding:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    @property
    def vector_count(self) -> int:
        return self.n


def test_embedding_name_becomes_its_vector_count_of_placeholders(tok) -> None:  # type: ignore[no-untyped-def]
    matcher = EmbeddingMatcher(tok, {"mystyle": _FakeEmbedding("mystyle", 3)})
    p = tokenize_prompt("a (mystyle:1.2) cat", tok, matcher)
    c = p.chunks[0]
    assert p.embeddings == ("mystyle",)
    assert [(f.offset, f.name, f.count) for f in c.fixes] == [(2, "mystyle", 3)]
    assert c.tokens[2:5] == [0, 0, 0] and c.weights[2:5] == [1.2] * 3
    assert c.tokens[5] == _ids(tok, "cat")[0]


def test_embedding_is_never_split_across_chunks(tok) -> None:  # type: ignore[no-untyped-def]
    matcher = EmbeddingMatcher(tok, {"mystyle": _FakeEmbedding("mystyle", 8)})
    p = tokenize_prompt(" ".join(["cat"] * 70) + " mystyle", tok, matcher)
    assert len(p.chunks) == 2
    assert p.chunks[0].fixes == [] and p.chunks[1].fixes[0].offset == 1


@pytest.mark.parametrize("arch", ["sd1", "sd2-v", "sdxl"])
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_plain_prompt_encodes_exactly_as_the_plain_diffusers_path(
    models: dict[str, Components], arch: str, clip_skip: int
) -> None:
    parts = models[arch]
    text = "a photo of an astronaut riding a horse"
    ours = encode_tokenized(parts, tokenize_prompt(text, parts.tokenizer or parts.tokenizer_2), clip_skip)
    plain = encode_prompts(parts, [text], clip_skip)
    assert torch.equal(ours.embeds, plain.embeds)
    if plain.pooled is not None:
        assert ours.pooled is not None and torch.equal(ours.pooled, plain.pooled)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_weights_multiply_then_restore_the_mean(models: dict[str, Components], arch: str) -> None:
    parts = models[arch]
    tok = parts.tokenizer
    plain = tokenize_prompt("a red apple", tok).chunks[0]
    weighted = tokenize_prompt("a (red:1.5) apple", tok).chunks[0]
    assert plain.tokens == weighted.tokens
    z = encode_chunk(parts, plain).embeds
    zw = encode_chunk(parts, weighted).embeds
    w = torch.tensor(weighted.weights).reshape(1, -1, 1)
    widths = [te.config.hidden_size for te in (parts.text_encoder, parts.text_encoder_2) if te is not None]
    expected, start = [], 0
    for width in widths:  # each encoder's output is weighted and rescaled on its own
        part = z[..., start : start + width]
        scaled = part * w
        expected.append(scaled * (part.mean() / scaled.mean()))
        start += width
    assert torch.allclose(zw, torch.cat(expected, dim=-1), atol=1e-6)
    assert not torch.allclose(zw, z)
    assert torch.allclose(zw[..., : widths[0]].mean(), z[..., : widths[0]].mean(), atol=1e-6)


def test_long_prompt_encoding_is_chunks_concatenated_and_pooled_from_the_first(
    models: dict[str, Components],
) -> None:
    parts = models["sdxl"]
    text = " ".join(["cat"] * 120)
    p = tokenize_prompt(text, parts.tokenizer)
    cond = encode_tokenized(parts, p)
    assert cond.embeds.shape[1] == 77 * len(p.chunks) == 154
    first = encode_chunk(parts, p.chunks[0])
    assert torch.equal(cond.embeds[:, :77], first.embeds)
    assert cond.pooled is not None and first.pooled is not None and torch.equal(cond.pooled, first.pooled)


def test_pad_to_appends_empty_chunks(models: dict[str, Components]) -> None:
    enc = PromptEncoder(models["sd1"], "k", EncodingCache())
    empty, _ = enc.encode("")
    short, _ = enc.encode("a cat")
    padded = pad_to(short, 231, empty)
    assert padded.tokens == 231
    assert torch.equal(padded.embeds[:, 77:154], empty.embeds) and torch.equal(
        padded.embeds[:, 154:], empty.embeds
    )
    with pytest.raises(ValueError):
        pad_to(short, 100, empty)


def test_cache_encodes_each_text_once_per_clip_skip(models: dict[str, Components]) -> None:
    cache = EncodingCache()
    enc = PromptEncoder(models["sd1"], "model-a", cache)
    sched = enc.schedule("a [cat:dog:3] [cat:dog:3]", 10)
    assert sched.texts_encoded == 2
    misses = cache.misses
    enc2 = PromptEncoder(models["sd1"], "model-a", cache)  # a later job on the same model
    again = enc2.schedule("a [cat:dog:3] [cat:dog:3]", 10)
    assert cache.misses == misses  # nothing encoded again
    assert again.parts[0].schedule[0][1] is sched.parts[0].schedule[0][1]
    enc2.encode("a cat dog", clip_skip=2)
    assert cache.misses == misses + 1
    other = PromptEncoder(models["sd1"], "model-b", cache)  # another model never shares encodings
    before = cache.misses
    other.encode("a cat dog", clip_skip=2)
    assert cache.misses == before + 1


def test_and_makes_weighted_parts_and_negative_ignores_and(models: dict[str, Components]) -> None:
    enc = PromptEncoder(models["sd1"], "k", EncodingCache())
    cond = enc.schedule("a cat AND a dog :0.5", 10)
    assert [p.weight for p in cond.parts] == [1.0, 0.5]
    neg = enc.schedule("a cat AND a dog :0.5", 10, multicond=False)
    assert len(neg.parts) == 1


def test_lora_tags_are_not_encoded(models: dict[str, Components]) -> None:
    enc = PromptEncoder(models["sd1"], "k", EncodingCache())
    with_tag = enc.schedule("a cat <lora:foo:0.8>", 10).parts[0].schedule[0][1]
    assert torch.equal(with_tag.embeds, enc.encode("a cat ")[0].embeds)
