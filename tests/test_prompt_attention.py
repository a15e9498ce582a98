"""parse_attention against A1111 v1.10's parse_prompt_attention.

Every expected value below was produced by A1111's own function (its doctests, prompt-syntax.md, and
more inputs run through it); weights are the exact floats A1111 computes.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui.core.prompts import parse_attention
from webui.core.prompts.attention import split_break

A1111_CASES: list[tuple[str, list[tuple[str, float]]]] = [
    # A1111's doctests
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    # prompt-syntax.md and further inputs run through A1111
    ("", [("", 1.0)]),
    ("((text))", [("text", 1.2100000000000002)]),
    ("[text]", [("text", 0.9090909090909091)]),
    ("[[text]]", [("text", 0.8264462809917354)]),
    ("(text:1.3)", [("text", 1.3)]),
    ("((a:1.5):0.5)", [("a", 0.75)]),
    ("[(x)]", [("x", 1.0)]),
    ("([x])", [("x", 1.0)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("a:1.2", [("a:1.2", 1.0)]),
    ("a:1.2)", [("a:1.2)", 1.0)]),
    ("\\\\", [("\\", 1.0)]),
    ("a\\b", [("ab", 1.0)]),
    ("stray ) and ] here", [("stray ) and ] here", 1.0)]),
    ("(a] b)", [("a] b", 1.1)]),
    ("[a) b]", [("a) b", 0.9090909090909091)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
    ("a BREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("x BREAK BREAK y", [("x", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("y", 1.0)]),
    ("(x: 1.5 )", [("x", 1.5)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(x:+.5)", [("x", 0.5)]),
    ("(((a)", [("a", 1.3310000000000004)]),
    ("[[[a", [("a", 0.7513148009015777)]),
    ("((a)) (b:1.21)", [("a", 1.2100000000000002), (" ", 1.0), ("b", 1.21)]),
    ("(a) (b:1.1)", [("a", 1.1), (" ", 1.0), ("b", 1.1)]),
    ("(a:0) BREAK", [("a", 0.0), ("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a (b [c] d) e", [("a ", 1.0), ("b ", 1.1), ("c", 1.0), (" d", 1.1), (" e", 1.0)]),
    ("(a[b)c]", [("a", 1.1), ("b", 1.0), ("c", 0.9090909090909091)]),
    ("\\(a:1.5\\)", [("(a:1.5)", 1.0)]),
    ("a \\ b", [("a  b", 1.0)]),
    (":", [(":", 1.0)]),
    ("(:1.5)", [("", 1.0)]),
    ("(a:1.5)(b:1.5)", [("ab", 1.5)]),
    ("(a:1e3)", [("a:1e3", 1.1)]),
    ("(a:\u0663)", [("a", 3.0)]),
    ("snow (x:1.1", [("snow ", 1.0), ("x:1.1", 1.1)]),
    ("a(b(c(d)))", [("a", 1.0), ("b", 1.1), ("c", 1.2100000000000002), ("d", 1.3310000000000004)]),
    ("[a:b:0.5]", [("a:b:0.5", 0.9090909090909091)]),
    ("(a:1.1)(b)", [("ab", 1.1)]),
    ("BREAKfast BREAK_ x_BREAK", [("BREAKfast BREAK_ x_BREAK", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_CASES)
def test_matches_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    got = parse_attention(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    for (_, weight), (_, want) in zip(got, expected, strict=True):
        assert weight == pytest.approx(want, abs=1e-12)


def test_weights_are_bit_identical_to_a1111() -> None:
    """Equal-weight merging compares floats with ==, so the products must be A1111's exact floats."""
    runs = dict(parse_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."))
    assert runs["house"] == 1.5730000000000004
    assert runs["sky"] == 1.4641000000000006


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # A1111 raises ValueError on these (float("1.2.3")); the weight reads as text instead.
        ("(a:1.2.3)", [("a:1.2.3", 1.1)]),
        ("(a:.)", [("a:.", 1.1)]),
        ("x (a: 1..5 ) y", [("x ", 1.0), ("a: 1..5 ", 1.1), (" y", 1.0)]),
    ],
)
def test_unreadable_weight_is_text(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(prompt) == expected


def test_break_only_as_a_whole_upper_case_word() -> None:
    assert parse_attention("x,BREAK,y") == [("x,", 1.0), ("BREAK", -1.0), (",y", 1.0)]
    assert parse_attention("xBREAKy BREAKS") == [("xBREAKy BREAKS", 1.0)]


BREAK_SOUP = st.lists(st.sampled_from([" ", "\t", "\n", "BREAK", "a", "_", ",", "\u00e9"]), max_size=20)


@given(BREAK_SOUP.map("".join))
def test_split_break_is_a1111_regex_split(text: str) -> None:
    assert split_break(text) == re.split(r"\s*\bBREAK\b\s*", text, flags=re.S)
