"""The CLIP tokenizer of every Stable Diffusion text encoder, built offline from shipped files.

All SD text encoders (CLIP ViT-L for SD1 and SDXL's first encoder, OpenCLIP ViT-H for SD2, OpenCLIP
ViT-bigG for SDXL's second encoder) share one byte-level BPE vocabulary of 49,408 tokens, shipped in
``webui/assets/clip_tokenizer`` (see the README there for provenance). Sequences are 77 tokens:
``<|startoftext|>`` (49406), the prompt's tokens, ``<|endoftext|>`` (49407), then padding.

They differ only in the padding id, which the text encoders were trained with:

* CLIP ViT-L (SD1, SDXL ``tokenizer``) pads with ``<|endoftext|>`` (49407);
* OpenCLIP (SD2, SDXL ``tokenizer_2``) pads with id 0, the byte symbol ``"!"``.

``clip_tokenizer("!")`` pads with id 0 the way OpenCLIP, A1111 and ComfyUI do, and still tokenizes a
literal ``!`` in the prompt by the BPE rules (``"!"`` -> 256, ``"!!"`` -> 748). The tokenizers that
Hugging Face repos ship for SD2/SDXL register ``"!"`` as a special token instead, so a ``!`` typed in a
prompt becomes the pad id 0 (diffusers issue #4153); a folder written by ``save_clip_tokenizer`` and
loaded back with ``CLIPTokenizer.from_pretrained`` behaves that way too, since that is what the Hugging
Face format can express. Prefer ``clip_tokenizer`` objects over saved folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

MAX_LENGTH = 77
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
OPENCLIP_PAD_TOKEN = "!"  # id 0: what SD2 and SDXL's second text encoder were trained to see as padding


def tokenizer_files() -> tuple[Path, Path]:
    """Paths of the shipped ``vocab.json`` and ``merges.txt``."""
    folder = Path(__file__).resolve().parents[2] / "assets" / "clip_tokenizer"
    return folder / "vocab.json", folder / "merges.txt"


def clip_tokenizer(pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A CLIPTokenizer with ``model_max_length`` 77 that pads with ``pad_token``.

    Use ``"<|endoftext|>"`` for CLIP ViT-L (SD1, SDXL's ``tokenizer``) and ``"!"`` for OpenCLIP (SD2,
    SDXL's ``tokenizer_2``); ``webui.core.models.configs.pad_token_for`` tells which.
    """
    from transformers import CLIPTokenizer

    vocab_path, merges_path = tokenizer_files()
    # File paths, not parsed data: the tokenizers library reads vocab.json and merges.txt itself.
    # (Beware: CLIPTokenizer(vocab_file=..., merges_file=...) is silently ignored outside from_pretrained.)
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_path),
        merges=str(merges_path),
        model_max_length=MAX_LENGTH,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )
    vocab = tokenizer.get_vocab()
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{vocab_path}: {len(vocab)} tokens, expected {VOCAB_SIZE}")
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the CLIP vocabulary")
    if pad_token != EOS_TOKEN:
        # Setting the id (not passing pad_token=) keeps the token out of the special-token splitter,
        # so the same characters typed in a prompt still go through BPE.
        tokenizer.pad_token_id = vocab[pad_token]
    return tokenizer


def save_clip_tokenizer(folder: Path, pad_token: str = EOS_TOKEN) -> Path:
    """Write a tokenizer folder that ``CLIPTokenizer.from_pretrained(folder)`` loads offline.

    The folder holds what transformers writes (tokenizer.json, tokenizer_config.json) plus the plain
    vocab.json and merges.txt that older transformers and other tools read. See the module docstring
    for how a reloaded ``"!"``-padded tokenizer treats a literal ``!``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    clip_tokenizer(pad_token).save_pretrained(str(folder))
    for source in tokenizer_files():
        shutil.copyfile(source, folder / source.name)
    return folder
