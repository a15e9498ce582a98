"""The T5 v1.1 tokenizer of SD3/SD3.5 (`tokenizer_3`) and Flux (`tokenizer_2`), built offline.

No checkpoint carries it, so it ships in ``webui/assets/t5_tokenizer`` (origin and license in the README
there). 32,000 SentencePiece pieces plus 100 sentinels; `</s>` (id 1) ends every sequence and `<pad>`
(id 0) pads. The sequence length is the family's: 256 tokens for SD3 and Flux schnell, 512 for Flux dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

VOCAB_SIZE = 32100
PAD_ID = 0
EOS_ID = 1


def tokenizer_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "assets" / "t5_tokenizer"


def t5_tokenizer(max_length: int = 512) -> PreTrainedTokenizerBase:
    """The shipped T5 tokenizer with `model_max_length` set to the family's sequence length."""
    from transformers import T5Tokenizer  # transformers 5: the tokenizers-backed (fast) class

    if not 1 <= max_length <= 4096:
        raise ValueError(f"max_length must be between 1 and 4096, got {max_length}")
    tokenizer = T5Tokenizer.from_pretrained(str(tokenizer_dir()), model_max_length=max_length)
    if len(tokenizer) != VOCAB_SIZE or tokenizer.pad_token_id != PAD_ID or tokenizer.eos_token_id != EOS_ID:
        raise ValueError(f"{tokenizer_dir()}: not the T5 v1.1 tokenizer (size {len(tokenizer)})")
    return tokenizer  # type: ignore[no-any-return]
