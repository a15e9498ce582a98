"""The shipped T5 tokenizer (SD3 / Flux) tokenizes offline to T5 v1.1's ids."""

from __future__ import annotations

import hashlib

import pytest

from webui.core.models.t5_tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE, t5_tokenizer, tokenizer_dir


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return t5_tokenizer(512)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [3, 9, 1202, 13, 3, 9, 1712, 1]),  # T5 v1.1: "▁" 3, "a" 9, "▁photo" 1202 ...
        ("Hello world", [8774, 296, 1]),
        ("", [1]),
    ],
)
def test_known_ids(tok, text: str, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    assert tok(text).input_ids == ids


def test_pads_with_zero_and_ends_with_eos(tok) -> None:  # type: ignore[no-untyped-def]
    enc = tok("a red fox", padding="max_length", max_length=16, truncation=True)
    assert len(enc.input_ids) == 16
    end = enc.input_ids.index(EOS_ID)
    assert enc.input_ids[end + 1 :] == [PAD_ID] * (15 - end)
    assert len(tok) == VOCAB_SIZE


@pytest.mark.parametrize("length", [256, 512])
def test_sequence_length_is_the_familys(length: int) -> None:
    tok = t5_tokenizer(length)
    enc = tok("word " * 2000, truncation=True, padding="max_length")
    assert len(enc.input_ids) == length and enc.input_ids[-1] == EOS_ID


def test_bad_length_is_refused() -> None:
    with pytest.raises(ValueError, match="max_length"):
        t5_tokenizer(0)


def test_shipped_files_are_the_documented_ones() -> None:
    readme = (tokenizer_dir() / "README.md").read_text(encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        digest = hashlib.sha256((tokenizer_dir() / name).read_bytes()).hexdigest()
        assert f"`{name}` | `{digest}`" in readme, name
