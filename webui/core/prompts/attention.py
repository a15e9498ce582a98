"""Attention (emphasis) parsing: A1111 v1.10 "Original" mode, `(x)`, `[x]`, `(x:1.3)`, escapes, BREAK.

`parse_attention(text)` returns `[(text, weight), ...]` exactly as A1111's `parse_prompt_attention`:

- the prompt is cut into tokens: the escapes `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` (a literal character), a lone
  backslash (dropped: it yields an empty run), `(`, `[`, `:<number>)` (with optional spaces), `)`, `]`,
  a run of other text, or a lone `:`;
- `(` and `[` remember where their run starts; `)` multiplies every run since the matching `(` by 1.1,
  `:<number>)` by the number, `]` by 1/1.1. Round and square brackets are two separate stacks. A closer
  with nothing open is plain text, and brackets left open at the end are closed there (round ones first);
- plain text is split on `\\s*\\bBREAK\\b\\s*`; each split adds a `("BREAK", -1.0)` run. Like every run,
  a BREAK inside brackets is multiplied too (A1111 then no longer treats it as a chunk break);
- weights are float products taken in the order A1111 applies them (one multiplication per closing
  bracket, in closing order), so they are bit-identical (1.1*1.1*1.1*1.3 == 1.5730000000000004);
- adjacent runs with equal weights are merged; an empty prompt gives `[("", 1.0)]`.

Two deliberate differences, both where A1111 fails instead of answering:
- a `:<number>)` whose number Python cannot read (`(a:1.2.3)`, `(a:.)`) raises ValueError in A1111; here
  it reads as the text `:<number>` followed by a plain `)`, which is how `(a:b)` is read;
- A1111's BREAK regex and its per-bracket loops are quadratic (a 20,000-space run takes seconds). The
  BREAK split here finds the same matches in linear time, and the weights are multiplied with numpy
  slices (one IEEE multiplication per element, same order, same results).
"""

from __future__ import annotations

import re

import numpy as np

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]            # escaped bracket or backslash: a literal character
    | \\                    # a lone backslash: dropped
    | \(
    | \[
    | :\s*([+-]?[.\d]+)\s*\)   # explicit weight, closes a round bracket
    | \)
    | \]
    | [^\\()\[\]:]+         # plain text
    | :
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")


def split_break(text: str) -> list[str]:
    """`re.split(r"\\s*\\bBREAK\\b\\s*", text)`, in linear time (the regex backtracks on long spaces)."""
    parts: list[str] = []
    start = 0  # start of the current part (= end of the previous separator)
    for m in _BREAK_WORD.finditer(text):
        if m.start() < start:  # inside the previous separator (cannot happen: BREAK is no space)
            continue
        left = m.start()
        while left > start and text[left - 1].isspace():
            left -= 1
        right = m.end()
        while right < len(text) and text[right].isspace():
            right += 1
        parts.append(text[start:left])
        start = right
    parts.append(text[start:])
    return parts


def _weight(number: str) -> float | None:
    try:
        return float(number)
    except ValueError:
        return None


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into `(text, weight)` runs the way A1111 v1.10 does (module docstring)."""
    texts: list[str] = []
    initial: list[float] = []
    # (first run index, end run index at that moment, multiplier), in the order A1111 applies them
    events: list[tuple[int, int, float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def add_text(chunk: str) -> None:
        for i, part in enumerate(split_break(chunk)):
            if i > 0:
                texts.append("BREAK")
                initial.append(-1.0)
            texts.append(part)
            initial.append(1.0)

    for m in _TOKEN.finditer(text):
        token, number = m.group(0), m.group(1)
        if token.startswith("\\"):
            texts.append(token[1:])
            initial.append(1.0)
        elif token == "(":
            round_open.append(len(texts))
        elif token == "[":
            square_open.append(len(texts))
        elif number is not None and round_open:
            weight = _weight(number)
            if weight is None:  # unreadable number: text, then a plain ")"
                add_text(token[:-1])
                events.append((round_open.pop(), len(texts), ROUND_MULTIPLIER))
            else:
                events.append((round_open.pop(), len(texts), weight))
        elif token == ")" and round_open:
            events.append((round_open.pop(), len(texts), ROUND_MULTIPLIER))
        elif token == "]" and square_open:
            events.append((square_open.pop(), len(texts), SQUARE_MULTIPLIER))
        else:
            add_text(token)

    events.extend((pos, len(texts), ROUND_MULTIPLIER) for pos in round_open)
    events.extend((pos, len(texts), SQUARE_MULTIPLIER) for pos in square_open)

    if not texts:
        return [("", 1.0)]

    weights = np.array(initial, dtype=np.float64)
    with np.errstate(all="ignore"):  # inf/nan weights are A1111's too; no warnings
        for first, end, multiplier in events:
            if first < end:
                weights[first:end] *= multiplier

    merged: list[tuple[str, float]] = []
    run: list[str] = []
    run_weight = 0.0
    for part, w in zip(texts, weights.tolist(), strict=True):
        if run and w == run_weight:  # A1111 compares with ==: nan never merges, -0.0 merges with 0.0
            run.append(part)
        else:
            if run:
                merged.append(("".join(run), run_weight))
            run, run_weight = [part], w
    merged.append(("".join(run), run_weight))
    return merged
