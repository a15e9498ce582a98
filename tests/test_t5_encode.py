"""T5 prompts with A1111 weights: plain prompts equal diffusers' own encoding; weights change it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from webui.core.models.t5_tokenizer import t5_tokenizer
from webui.core.models.tiny_flow import build_tiny_flow
from webui.core.prompts.t5_encode import encode_t5, t5_tokens


@pytest.fixture(scope="module")
def t5() -> Any:
    return build_tiny_flow("flux-schnell", seed=3).t5


@pytest.fixture(scope="module")
def tok() -> Any:
    return t5_tokenizer(256)


def _diffusers_t5(t5: Any, tok: Any, text: str, length: int) -> torch.Tensor:
    """What FluxPipeline / StableDiffusion3Pipeline do (`_get_t5_prompt_embeds`)."""
    ids = tok([text], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return t5(ids)[0]


@pytest.mark.parametrize("text", ["a photo of a cat", "an old lighthouse, stormy sea, dusk", ""])
def test_plain_prompts_equal_the_pipelines_encoding(t5: Any, tok: Any, text: str) -> None:
    tokens = t5_tokens(tok, text, 64)
    ref = tok([text], padding="max_length", max_length=64, truncation=True).input_ids[0]
    assert tokens.ids == ref and tokens.dropped == 0
    assert torch.equal(encode_t5(t5, tokens), _diffusers_t5(t5, tok, text, 64))


def test_weights_follow_a1111_syntax(tok: Any) -> None:
    plain = t5_tokens(tok, "a red fox in snow", 32)
    weighted = t5_tokens(tok, "a (red fox:1.5) in [snow]", 32)
    assert weighted.ids == plain.ids
    fox = tok("red fox", add_special_tokens=False).input_ids
    start = plain.ids.index(fox[0])
    assert weighted.weights[start : start + len(fox)] == [1.5] * len(fox)
    snow = plain.ids.index(tok("snow", add_special_tokens=False).input_ids[-1])
    assert weighted.weights[snow] == pytest.approx(1 / 1.1)
    assert weighted.weights[plain.used :] == [1.0] * (32 - plain.used)


def test_weights_change_the_features_and_keep_their_mean(t5: Any, tok: Any) -> None:
    plain = encode_t5(t5, t5_tokens(tok, "a red fox in snow", 32))
    weighted = encode_t5(t5, t5_tokens(tok, "a (red fox:1.5) in snow", 32))
    assert not torch.allclose(plain, weighted)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4)


def test_long_prompts_are_cut_at_the_length_and_say_how_much(tok: Any) -> None:
    text = "castle " * 600
    tokens = t5_tokens(tok, text, 256)
    assert len(tokens.ids) == 256 and tokens.ids[-1] == 1 and tokens.used == 255
    assert tokens.dropped == len(tok(text, add_special_tokens=False).input_ids) - 255 > 300
    assert tokens.ids == tok([text], max_length=256, truncation=True).input_ids[0]


def test_break_only_separates(tok: Any) -> None:
    assert t5_tokens(tok, "a fox BREAK a hen", 32).ids == t5_tokens(tok, "a fox a hen", 32).ids
