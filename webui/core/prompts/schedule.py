"""Prompt editing: `[from:to:when]`, `[to:when]`, `[from::when]` and `[a|b|c]`, as A1111 v1.10 schedules them.

`prompt_schedule(prompt, steps)` returns `[(end_step, text), ...]`: use `text` up to and including
`end_step`. It gives the results of A1111's `get_learned_conditioning_prompt_schedules` (lark Earley
grammar, "new" scheduling, no hires pass). The rules, as that grammar decides them:

- Brackets pair up like nested parentheses. Inside a construct everything must be well formed; at the top
  level a bracket or `:` that cannot belong to a well-formed construct is plain text. A `[`/`(` that can
  open a well-formed construct always does. (A1111 mostly agrees; when stray brackets sit right next to
  an edit, e.g. `[a:3]] x`, its Earley parser's pick depends on Python's hash seed under lark 1.1.2.)
- `[...]` with no separator at its own level is emphasis (kept verbatim, as is every `(...)` and
  `(...:...)`); with `|` separators it alternates `a, b, c, a, ...` per step (an empty option is "");
  with one or two `:` and a last part that is `[spaces] number [spaces]` it is an edit. Anything else
  (`[a:b]`, `[a:b:c:1]`, `(a:b:c)`, `:` mixed with `|`) is not a construct.
- `when` with a decimal point is a fraction of `steps` (`.5` -> 5 of 10, `1.5` -> 15), without one a step
  number (`3`, `1e1`); either is truncated to an int and capped at `steps`. The edit shows `from` (or
  nothing) while `step <= when`, then `to`. A `when` below 1 never shows `from`.
- The end steps are `steps` plus every edit's `when` that is >= 1 (also edits inside an unused branch),
  and every step when the prompt holds an alternation; texts are not merged even when equal.
- A prompt the grammar rejects is used as-is for all steps: a `|` outside any `[..|..]`, a backslash at
  the very end or before a line break. Text, escapes (`\\[`) and emphasis pass through unchanged.

Implementation: a linear pass pairs the brackets with a stack (what Earley's search decides, without its
cubic cost: A1111 takes 35 s on a 5,000-character prompt) and marks the structural tokens; a small lark
LALR grammar then builds the tree from those tokens. Guards: edits/alternations nested deeper than
`MAX_NESTING` make the prompt be used as-is (A1111 would hit Python's recursion limit there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import lark
from lark import Token, Tree

from webui.core.types import RequestError

MAX_NESTING = 100

_SPECIALS = frozenset("[]():|")
_LEX = re.compile(r"([\[\]():|])|((?:[^\\\[\]():|]|\\.)+)")
_WHEN = re.compile(
    r"\s*([+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+))\s*"
)

_GRAMMAR = r"""
start: _part*
body: _part*
_part: TEXT | edit | alternation
edit: _OPEN body _SEP body _SEP WHEN _CLOSE
    | _OPEN body _SEP WHEN _CLOSE
alternation: _OPEN body (_BAR body)+ _CLOSE
%declare TEXT WHEN _OPEN _CLOSE _SEP _BAR
"""

_Tok = tuple[str, str]  # (terminal name, text)


@cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR, parser="lalr", lexer="basic")


@dataclass
class _Group:
    """A `[` or `(` still waiting for its closer, with the separators seen at its own level."""

    opener: int  # token index
    kind: str  # "[" or "("
    separators: list[int] = field(default_factory=list)  # token indices
    separator: str = ""  # ":" or "|" once one is seen

    def accepts(self, separator: str) -> bool:
        if self.kind == "(":
            return separator == ":" and not self.separators  # (text:weight)
        if separator == "|":
            return self.separator in ("", "|")
        return self.separator in ("", ":") and len(self.separators) < 2  # [to:when], [from:to:when]


class _Unparsable(Exception):
    """The grammar has no parse for the prompt: A1111 uses it as-is."""


def _tokens(prompt: str) -> list[str]:
    """Single bracket/separator characters and maximal runs of other text (escapes included)."""
    tokens: list[str] = []
    pos = 0
    for m in _LEX.finditer(prompt):
        if m.start() != pos:  # a backslash at the end or before a line break: no terminal matches
            raise _Unparsable
        pos = m.end()
        tokens.append(m.group(0))
    if pos != len(prompt):
        raise _Unparsable
    return tokens


def _mark(group: _Group, closer: int, tokens: list[str], roles: list[str]) -> bool:
    """Mark the tokens of a group closed by tokens[closer]; False if it cannot be a construct."""
    if (group.kind == "(") != (tokens[closer] == ")"):
        return False
    if group.kind == "(" or not group.separators:  # emphasis: stays text
        return True
    if group.separator == ":":
        last = group.separators[-1]
        if closer - last != 2 or tokens[last + 1] in _SPECIALS:  # `[spaces] number [spaces]` only
            return False
        number = _WHEN.fullmatch(tokens[last + 1])
        if number is None:
            return False
        tokens[last + 1] = number.group(1)
        roles[last + 1] = "WHEN"
    roles[group.opener], roles[closer] = "_OPEN", "_CLOSE"
    for index in group.separators:
        roles[index] = "_SEP" if group.separator == ":" else "_BAR"
    return True


def _structure(prompt: str) -> list[_Tok]:
    """Tokens for the grammar: constructs marked, everything else TEXT (raises _Unparsable).

    One pass with a stack. A bracket or `:` that cannot belong where it stands makes every open group
    plain text (inside a construct nothing may be stray, so no group around it can be one either).
    """
    tokens = _tokens(prompt)
    roles = ["TEXT"] * len(tokens)
    stack: list[_Group] = []

    def give_up_open_groups() -> None:
        if any(group.separator == "|" for group in stack):
            raise _Unparsable  # their bars end up outside any alternation
        stack.clear()

    for index, tok in enumerate(tokens):
        if tok in ("[", "("):
            stack.append(_Group(index, tok))
        elif tok in ("]", ")"):
            if stack and _mark(stack[-1], index, tokens, roles):
                stack.pop()
            else:
                give_up_open_groups()
        elif tok in (":", "|"):
            if stack and stack[-1].accepts(tok):
                stack[-1].separator = tok
                stack[-1].separators.append(index)
            elif tok == "|":
                raise _Unparsable  # a bar outside any alternation
            else:
                give_up_open_groups()
    give_up_open_groups()

    out: list[_Tok] = []
    text: list[str] = []
    for role, tok in zip(roles, tokens, strict=True):
        if role == "TEXT":
            text.append(tok)
            continue
        if text:
            out.append(("TEXT", "".join(text)))
            text = []
        out.append((role, tok))
    if text:
        out.append(("TEXT", "".join(text)))
    return out


@dataclass(frozen=True)
class _Edit:
    before: tuple[_Piece, ...]
    after: tuple[_Piece, ...]
    when: int


@dataclass(frozen=True)
class _Alternation:
    options: tuple[tuple[_Piece, ...], ...]


_Piece = str | _Edit | _Alternation


def _when(number: str, steps: int) -> int:
    value = float(number)
    if "." in number:
        value *= steps
    if value >= steps:  # also inf (1e999): A1111's int(inf) would raise
        return steps
    return int(value) if value >= 1 else 0  # below 1: `step <= when` never holds, like A1111's


def _pieces(children: list[Tree[Token] | Token], steps: int) -> tuple[_Piece, ...]:
    out: list[_Piece] = []
    for child in children:
        piece: _Piece
        if isinstance(child, Token):
            piece = str(child)
        elif child.data == "edit":
            *slots, when = child.children
            bodies = [_pieces(_body(slot), steps) for slot in slots]
            piece = _Edit(bodies[0] if len(bodies) == 2 else (), bodies[-1], _when(str(when), steps))
        else:
            piece = _Alternation(tuple(_pieces(_body(option), steps) for option in child.children))
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        else:
            out.append(piece)
    return tuple(out)


def _body(node: Tree[Token] | Token) -> list[Tree[Token] | Token]:
    assert isinstance(node, Tree) and node.data == "body"
    return node.children


def _parse(prompt: str, steps: int) -> tuple[_Piece, ...]:
    tokens = _structure(prompt)
    depth = deepest = 0
    for name, _ in tokens:
        depth += (name == "_OPEN") - (name == "_CLOSE")
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise _Unparsable
    interactive = _parser().parse_interactive("")
    for name, text in tokens:
        interactive.feed_token(Token(name, text))
    tree = interactive.feed_eof()  # type: ignore[no-untyped-call]
    assert isinstance(tree, Tree)
    return _pieces(tree.children, steps)


@dataclass
class _Switches:
    """What a step's text depends on: every edit's `when` and every alternation's length."""

    whens: set[int] = field(default_factory=set)
    lengths: set[int] = field(default_factory=set)

    def key(self, step: int) -> tuple[tuple[bool, ...], tuple[int, ...]]:
        return tuple(step <= w for w in sorted(self.whens)), tuple(
            (step - 1) % n for n in sorted(self.lengths)
        )


def _switches(pieces: tuple[_Piece, ...]) -> _Switches:
    found = _Switches()
    todo = [pieces]
    while todo:
        for piece in todo.pop():
            if isinstance(piece, _Edit):
                found.whens.add(piece.when)
                todo += [piece.before, piece.after]
            elif isinstance(piece, _Alternation):
                found.lengths.add(len(piece.options))
                todo += piece.options
    return found


def _render(pieces: tuple[_Piece, ...], step: int, out: list[str]) -> None:
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, _Edit):
            _render(piece.before if step <= piece.when else piece.after, step, out)
        else:
            _render(piece.options[(step - 1) % len(piece.options)], step, out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """`[(end_step, text), ...]` for `steps` sampling steps; end steps increase and end at `steps`.

    Never raises for any prompt string (an unparsable one is `[(steps, prompt)]`); raises
    RequestError("steps", ...) if `steps` is not a positive int.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RequestError("steps", f"must be a positive integer, got {steps!r}")
    if "[" not in prompt:  # no edit or alternation possible: the text is the prompt either way
        return [(steps, prompt)]
    try:
        pieces = _parse(prompt, steps)
    except (_Unparsable, lark.LarkError, RecursionError):
        return [(steps, prompt)]
    switches = _switches(pieces)
    ends = {steps, *(w for w in switches.whens if w >= 1)}
    if switches.lengths:  # an alternation changes the text every step
        ends.update(range(1, steps + 1))
    texts: dict[tuple[tuple[bool, ...], tuple[int, ...]], str] = {}  # steps that must look alike
    schedule: list[tuple[int, str]] = []
    for end in sorted(ends):
        key = switches.key(end)
        if key not in texts:
            out: list[str] = []
            _render(pieces, end, out)
            texts[key] = "".join(out)
        schedule.append((end, texts[key]))
    return schedule
