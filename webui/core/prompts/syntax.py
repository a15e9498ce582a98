"""Prompt-level syntax around the grammar: `AND` sub-prompts and `<kind:name:args>` extra-network tags.

Both follow A1111 v1.10 (modules/prompt_parser.py, modules/extra_networks.py):

- `split_and(prompt)`: the prompt is split on `\\bAND\\b` (upper case, a whole word). Each part may end in
  `:weight` (`[-+]?(\\d+\\.?|\\d*\\.\\d+)`, spaces allowed around the colon) which is taken off; trailing
  whitespace is taken off too, leading whitespace is kept. No weight means 1.0.
- `extract_networks(prompt)`: every `<(\\w+):([^>]+)>` is removed from the text and returned in order;
  its second group split on `:` gives the name and the arguments (`<lora:x:0.6:0.3>` -> name "x", args
  ("0.6", "0.3")). Everything else in the text is left exactly as it was.

Neither raises for any string, and both run in linear time (A1111's two regexes backtrack quadratically
on long runs of spaces or on many `<word:` with no `>` after them; the results here are the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*")
_NETWORK_HEAD = re.compile(r"<(\w+):")


def _weighted(part: str) -> tuple[str, float]:
    """A1111's `^((?:\\s|.)*?)(?:\\s*:\\s*(number))?\\s*$` on one sub-prompt, without its backtracking."""
    colon = part.rfind(":")
    if colon >= 0:
        number = _WEIGHT.fullmatch(part, colon + 1)
        if number is not None:
            try:
                return part[:colon].rstrip(), float(number.group(1))
            except ValueError:  # \d accepts digits float() may not: keep the text as it is
                pass
    return part.rstrip(), 1.0


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Composable-diffusion sub-prompts `[(text, weight), ...]`, as A1111 splits `a AND b:0.5`."""
    return [_weighted(part) for part in _AND.split(prompt)]


@dataclass(frozen=True)
class ExtraNetwork:
    """One `<kind:name:arg...>` tag: `<lora:x:0.8>` is ExtraNetwork("lora", "x", ("0.8",))."""

    kind: str
    name: str
    args: tuple[str, ...] = ()


def extract_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """The prompt without its extra-network tags, and the tags in the order they appear."""
    kept: list[str] = []
    found: list[ExtraNetwork] = []
    pos = 0  # everything before pos is handled
    start = prompt.find("<")
    while start >= 0:
        head = _NETWORK_HEAD.match(prompt, start)
        end = prompt.find(">", head.end()) if head is not None else -1
        if head is None or end <= head.end():  # not a tag (`[^>]+` needs one character at least)
            if end < 0 and head is not None:
                break  # no ">" anywhere after: no later "<" can close either
            start = prompt.find("<", start + 1)
            continue
        name, *args = prompt[head.end() : end].split(":")
        found.append(ExtraNetwork(head.group(1), name, tuple(args)))
        kept.append(prompt[pos:start])
        pos = end + 1
        start = prompt.find("<", pos)
    kept.append(prompt[pos:])
    return "".join(kept), found
