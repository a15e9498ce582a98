"""Derive CLIP's ``vocab.json`` and ``merges.txt`` from ``bpe_simple_vocab_16e6.txt.gz``.

Usage::

    python webui/assets/clip_tokenizer/derive.py path/to/bpe_simple_vocab_16e6.txt.gz
    python webui/assets/clip_tokenizer/derive.py --check path/to/bpe_simple_vocab_16e6.txt.gz

The first form (re)writes the two files next to this script; ``--check`` writes nothing and exits
with status 1 unless the shipped files equal, byte for byte, what the archive derives.

The vocabulary is laid out the way OpenAI's CLIP builds it: the 256 byte symbols of the reversible
byte-to-unicode table, the same 256 with ``</w>`` appended, one token per merge (the pair joined),
then ``<|startoftext|>`` and ``<|endoftext|>``: 256 + 256 + 48,894 + 2 = 49,408 entries.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

VOCAB_SIZE = 49408
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
N_MERGES = VOCAB_SIZE - 2 * 256 - len(SPECIAL_TOKENS)  # 48,894
MERGES_HEADER = "#version: 0.2"
END_OF_WORD = "</w>"
HERE = Path(__file__).resolve().parent


def byte_to_symbol() -> dict[int, str]:
    """CLIP's reversible byte -> symbol table, in vocabulary order.

    Bytes that are printable Latin-1 characters stand for themselves and come first, in byte order;
    the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) follow in byte order, mapped to the
    code points 256, 257, ... so that no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table


def read_merges(gz_path: Path) -> list[tuple[str, str]]:
    """The first 48,894 merge pairs of the archive (its first line is a header, skipped)."""
    lines = gzip.decompress(gz_path.read_bytes()).decode("utf-8").split("\n")
    selected = lines[1 : 1 + N_MERGES]
    if len(selected) != N_MERGES:
        raise ValueError(f"{gz_path}: expected at least {N_MERGES} merge lines, found {len(selected)}")
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(selected, start=2):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{gz_path}: line {number} is not a merge pair: {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = list(byte_to_symbol().values())
    tokens = [*symbols, *(s + END_OF_WORD for s in symbols), *(a + b for a, b in merges), *SPECIAL_TOKENS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("derived vocabulary has duplicate tokens")
    return vocab


def vocab_json_bytes(vocab: dict[str, int]) -> bytes:
    return (json.dumps(vocab, ensure_ascii=False) + "\n").encode("utf-8")


def merges_txt_bytes(merges: list[tuple[str, str]]) -> bytes:
    lines = [MERGES_HEADER, *(f"{a} {b}" for a, b in merges)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def derive(gz_path: Path) -> dict[str, bytes]:
    """File name -> exact bytes of the derived file."""
    merges = read_merges(gz_path)
    vocab = build_vocab(merges)
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"derived {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return {"vocab.json": vocab_json_bytes(vocab), "merges.txt": merges_txt_bytes(merges)}


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = parser.parse_args(argv)
    files = derive(args.gz)
    mismatched = []
    for name, data in files.items():
        target: Path = args.out / name
        if args.check:
            if not target.is_file() or target.read_bytes() != data:
                mismatched.append(name)
        else:
            target.write_bytes(data)
            print(f"wrote {target} ({len(data):,} bytes)")
    if mismatched:
        print(f"MISMATCH: {', '.join(mismatched)} in {args.out} differ from what {args.gz} derives")
        return 1
    if args.check:
        print(f"OK: {', '.join(files)} in {args.out} match {args.gz} byte for byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
