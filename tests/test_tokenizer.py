"""The offline CLIP tokenizer: shipped files, known ids, padding, truncation, and a reference BPE."""

from __future__ import annotations

import gzip
import importlib.util
import json
import unicodedata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import regex

from webui.core.models.tokenizer import (
    EOS_TOKEN,
    OPENCLIP_PAD_TOKEN,
    clip_tokenizer,
    save_clip_tokenizer,
    tokenizer_files,
)

BOS, EOS = 49406, 49407
ASTRONAUT = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
SENTENCES = [
    "a photo of an astronaut riding a horse",
    "Hello, World! It's 2024... isn't it?!",
    "masterpiece, best quality, (ultra-detailed:1.2), 8k uhd, f/1.8 50mm",
    "a café in Zürich, naïve façade — déjà vu",
    "東京の夜景, ネオン 🌃🐱 and emoji ❤️",
    "Ελληνικά και русский текст; العربية",
    "  multiple   spaces\tand\nnewlines  ",
    "1024x768 pixels at 3.14159 and $5.99 (50% off) #tag @user",
    "can't won't we'll they're I'd you've she's",
    "<|startoftext|>special<|endoftext|> tokens inline",
    "¡¿ ½ ¼ × ÷ © ® ™ ° ± µ ¶ · soft\u00adhyphen non\u00a0breaking",
]


def _load_derive() -> ModuleType:
    path = tokenizer_files()[0].parent / "derive.py"
    spec = importlib.util.spec_from_file_location("clip_tokenizer_derive", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def derive() -> ModuleType:
    return _load_derive()


@pytest.fixture(scope="module")
def tok() -> Any:
    return clip_tokenizer()


@pytest.fixture(scope="module")
def tok_openclip() -> Any:
    return clip_tokenizer(OPENCLIP_PAD_TOKEN)


class ReferenceBPE:
    """OpenAI CLIP's BPE written out plainly: lowest-rank pair first, every occurrence merged.

    Normalisation follows the transformers tokenizer (NFC, whitespace runs to one space, lower case);
    OpenAI's own additionally runs ftfy and html.unescape, which none of SENTENCES needs.
    """

    PATTERN = regex.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
    )

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], table: dict[int, str]) -> None:
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.table = table

    def word(self, word: str) -> list[str]:
        if word in ("<|startoftext|>", "<|endoftext|>"):
            return [word]
        symbols = [self.table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:], strict=False))
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        tokens = [t for w in self.PATTERN.findall(text) for t in self.word(w)]
        return [BOS, *(self.vocab[t] for t in tokens), EOS]


@pytest.fixture(scope="module")
def reference(derive: ModuleType) -> ReferenceBPE:
    vocab_path, merges_path = tokenizer_files()
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    lines = merges_path.read_text(encoding="utf-8").rstrip("\n").split("\n")[1:]
    merges = [(a, b) for a, b in (line.split(" ") for line in lines)]
    return ReferenceBPE(vocab, merges, derive.byte_to_symbol())


# ---- shipped files ---------------------------------------------------------------------------------


def test_shipped_files_have_clip_layout(derive: ModuleType) -> None:
    vocab_path, merges_path = tokenizer_files()
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    lines = merges_path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert lines[0] == "#version: 0.2"
    merges = [line.split(" ") for line in lines[1:]]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(49408))
    symbols = list(derive.byte_to_symbol().values())
    assert tokens[:256] == symbols and tokens[256:512] == [s + "</w>" for s in symbols]
    assert tokens[512:-2] == [a + b for a, b in merges]
    assert tokens[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert tokens[0] == "!" and tokens[256] == "!</w>"


def test_derive_rebuilds_the_shipped_files(derive: ModuleType, tmp_path: Path) -> None:
    """derive.py turns an archive holding the shipped merges back into byte-identical files.

    The check against the original archive from the open-clip-torch wheel is `derive.py --check`.
    """
    vocab_path, merges_path = tokenizer_files()
    merges = merges_path.read_text(encoding="utf-8").split("\n", 1)[1]
    gz = tmp_path / "bpe.txt.gz"
    gz.write_bytes(gzip.compress(f"header line\n{merges}more merge\n".encode()))
    files = derive.derive(gz)
    assert files == {"vocab.json": vocab_path.read_bytes(), "merges.txt": merges_path.read_bytes()}
    assert derive.main(["--check", "--out", str(vocab_path.parent), str(gz)]) == 0
    assert derive.main(["--check", "--out", str(tmp_path), str(gz)]) == 1


def test_byte_table_is_a_bijection_onto_non_space_symbols(derive: ModuleType) -> None:
    table = derive.byte_to_symbol()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert not any(s.isspace() or not s.isprintable() for s in table.values())


# ---- behaviour -------------------------------------------------------------------------------------


def test_known_ids(tok: Any) -> None:
    assert tok("a photo of an astronaut riding a horse").input_ids == ASTRONAUT
    assert tok("hello world").input_ids == [BOS, 3306, 1002, EOS]
    assert tok("!").input_ids == [BOS, 256, EOS]


def test_special_tokens_and_size(tok: Any) -> None:
    assert len(tok) == tok.vocab_size == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (BOS, EOS, EOS, EOS)
    assert tok.model_max_length == 77


@pytest.mark.parametrize(("pad_token", "pad_id"), [(EOS_TOKEN, EOS), (OPENCLIP_PAD_TOKEN, 0)])
def test_padding_to_77(pad_token: str, pad_id: int) -> None:
    tok = clip_tokenizer(pad_token)
    assert tok.pad_token == pad_token and tok.pad_token_id == pad_id
    enc = tok("a photo of an astronaut riding a horse", padding="max_length", max_length=77)
    assert enc.input_ids == ASTRONAUT + [pad_id] * 67
    assert enc.attention_mask == [1] * 10 + [0] * 67


def test_openclip_pad_keeps_exclamation_marks_as_text(tok: Any, tok_openclip: Any) -> None:
    """As OpenCLIP (and A1111, ComfyUI) tokenize: only padding uses id 0 (cf. diffusers issue #4153)."""
    text = "! !! !!! wow!"
    wow = tok.get_vocab()["wow</w>"]
    expected = [BOS, 256, 748, 995, wow, 256, EOS]  # "!</w>", "!!</w>", "!!!</w>"
    assert tok_openclip(text).input_ids == tok(text).input_ids == expected
    padded = tok_openclip(text, padding="max_length", max_length=77).input_ids
    assert padded[:7] == expected and set(padded[7:]) == {0}


@pytest.mark.parametrize("pad_token", [EOS_TOKEN, OPENCLIP_PAD_TOKEN])
def test_truncation_at_77_keeps_end_token(pad_token: str) -> None:
    tok = clip_tokenizer(pad_token)
    text = " ".join(["horse"] * 100)
    ids = tok(text, truncation=True, padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == BOS and ids[-1] == EOS and ids[1:-1] == [4558] * 75
    assert len(tok(text).input_ids) == 102  # no silent truncation unless asked


def test_unknown_pad_token_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the CLIP vocabulary"):
        clip_tokenizer("<pad>")


@pytest.mark.parametrize("text", SENTENCES)
def test_matches_reference_bpe(tok: Any, reference: ReferenceBPE, text: str) -> None:
    assert tok(text).input_ids == reference.encode(text)


@pytest.mark.parametrize("text", SENTENCES)
def test_decode_round_trip(tok: Any, text: str) -> None:
    """Decoding gives the normalised words back (CLIP decodes with a space after each word)."""
    ids = tok(text).input_ids
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert tok(decoded).input_ids == ids or "<|" in text
    words = "".join(unicodedata.normalize("NFC", text).lower().split())
    assert decoded.replace(" ", "") == words.replace("<|startoftext|>", "").replace("<|endoftext|>", "")


# ---- saved folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("pad_token", "pad_id"), [(EOS_TOKEN, EOS), (OPENCLIP_PAD_TOKEN, 0)])
def test_saved_folder_loads_offline(tmp_path: Path, pad_token: str, pad_id: int) -> None:
    from transformers import CLIPTokenizer

    folder = save_clip_tokenizer(tmp_path / "tokenizer", pad_token)
    assert {"tokenizer_config.json", "vocab.json", "merges.txt"} <= {p.name for p in folder.iterdir()}
    loaded = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert loaded.model_max_length == 77 and loaded.pad_token_id == pad_id
    for text in SENTENCES[:4]:
        if "!" not in text:
            assert loaded(text).input_ids == clip_tokenizer(pad_token)(text).input_ids
    enc = loaded("a photo of an astronaut riding a horse", padding="max_length", max_length=77)
    assert enc.input_ids == ASTRONAUT + [pad_id] * 67


def test_saved_openclip_folder_has_the_hub_exclamation_quirk(tmp_path: Path) -> None:
    """Documented difference: a reloaded "!"-padded folder turns a literal "!" into the pad id."""
    from transformers import CLIPTokenizer

    folder = save_clip_tokenizer(tmp_path / "tokenizer_2", OPENCLIP_PAD_TOKEN)
    loaded = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    wow = loaded.get_vocab()["wow</w>"]
    assert loaded("wow !").input_ids == [BOS, wow, 0, EOS]
