"""Property and fuzz tests: the prompt functions never raise, stay fast, and keep their invariants."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from webui.core.prompts import extract_networks, parse_attention, prompt_schedule, split_and


def _pieces(*pieces: str) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=40).map("".join)


SOUP = _pieces(*"()[]:|\\ ab1.5,<>\n-", "AND", "BREAK", " BREAK ", ":0.5]", "[a:", "<lora:")
ANY_TEXT = st.text()
FUZZ = settings(max_examples=300, deadline=None)


def _check_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    schedule = prompt_schedule(prompt, steps)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)), "end steps strictly increase"
    assert ends[-1] == steps and ends[0] >= 1
    assert all(isinstance(text, str) for _, text in schedule)
    return schedule


def _check_attention(prompt: str) -> list[tuple[str, float]]:
    runs = parse_attention(prompt)
    assert runs and all(isinstance(t, str) and isinstance(w, float) for t, w in runs)
    return runs


@FUZZ
@given(SOUP, st.integers(min_value=1, max_value=40))
def test_bracket_soup_never_raises(prompt: str, steps: int) -> None:
    _check_attention(prompt)
    _check_schedule(prompt, steps)
    parts = split_and(prompt)
    assert len(parts) == len(re.split(r"\bAND\b", prompt))
    text, nets = extract_networks(prompt)
    assert len(text) <= len(prompt) and all(f"<{n.kind}:" in prompt for n in nets)


@FUZZ
@given(ANY_TEXT, st.integers(min_value=1, max_value=40))
def test_any_unicode_never_raises(prompt: str, steps: int) -> None:
    _check_attention(prompt)
    _check_schedule(prompt, steps)
    split_and(prompt)
    extract_networks(prompt)


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_characters="[]")), st.integers(min_value=1, max_value=30))
def test_no_square_brackets_means_one_unchanged_text(prompt: str, steps: int) -> None:
    assert _check_schedule(prompt, steps) == [(steps, prompt)]


@FUZZ
@given(SOUP, st.integers(min_value=1, max_value=30))
def test_schedule_texts_only_drop_edit_syntax(prompt: str, steps: int) -> None:
    """Scheduling only chooses between parts of the prompt: no text has a character the prompt lacks."""
    allowed = set(prompt)
    for _, text in _check_schedule(prompt, steps):
        assert set(text) <= allowed


# tokens with the literal text A1111 reads them as (no brackets, no BREAK)
_LITERAL = st.sampled_from(
    [
        ("a", "a"),
        ("b c", "b c"),
        (", ", ", "),
        (":", ":"),
        ("1.5", "1.5"),
        ("\u00e9\u6f22", "\u00e9\u6f22"),
        ("\n", "\n"),
        ("|", "|"),
        ("\\(", "("),
        ("\\)", ")"),
        ("\\[", "["),
        ("\\]", "]"),
        ("\\\\", "\\"),
        ("\\a", "a"),  # a lone backslash is dropped
    ]
)


@FUZZ
@given(st.lists(_LITERAL, max_size=20))
def test_bracket_free_text_is_one_run_with_escapes_resolved(tokens: list[tuple[str, str]]) -> None:
    prompt = "".join(raw for raw, _ in tokens)
    expected = "".join(literal for _, literal in tokens)
    assert parse_attention(prompt) == [(expected, 1.0)]


@FUZZ
@given(_pieces(*"ab ,:\n\t", "BREAK", "BREAKx", "_BREAK"))
def test_break_items_are_the_only_thing_removed(prompt: str) -> None:
    runs = parse_attention(prompt)
    text = "".join(t for t, w in runs if not (t == "BREAK" and w == -1.0))
    assert text == re.sub(r"\s*\bBREAK\b\s*", "", prompt)
    assert sum(1 for t, w in runs if t == "BREAK" and w == -1.0) == len(re.findall(r"\bBREAK\b", prompt))


@FUZZ
@given(st.text(alphabet="ab ()[]:1.", max_size=30))
def test_attention_keeps_every_letter_in_order(prompt: str) -> None:
    runs = parse_attention(prompt)
    letters = "".join(c for c in "".join(t for t, _ in runs) if c in "ab")
    assert letters == "".join(c for c in prompt if c in "ab")


def _huge_prompt() -> str:
    pieces = [
        "masterpiece, best quality, ",
        "(detailed eyes:1.2), ",
        "[blue:red:0.5] hair, ",
        "((sharp)), ",
        "[cat|dog], ",
        "\\(parody\\) ",
        "BREAK ",
        "[soft] light, ",
        "<lora:style:0.7> ",
        "AND ",
    ]
    text = "".join(pieces[i % len(pieces)] for i in range(20_000))
    return text[:100_000]


def test_100k_prompt_is_fast() -> None:
    prompt = _huge_prompt()
    assert len(prompt) == 100_000
    started = time.perf_counter()
    runs = parse_attention(prompt)
    schedule = prompt_schedule(prompt, 30)
    parts = split_and(prompt)
    text, nets = extract_networks(prompt)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert len(schedule) == 30 and schedule[-1][0] == 30  # the alternations change every step
    assert "cat" in schedule[0][1] and "dog" in schedule[1][1]
    assert any(t == "BREAK" and w == -1.0 for t, w in runs)
    assert len(parts) > 100 and len(nets) > 100 and "<lora" not in text


def test_pathological_100k_inputs_are_fast() -> None:
    cases = [
        "a" + " " * 99_998 + "b",  # A1111's BREAK regex is quadratic here
        "(a" * 50_000,
        "[" * 100_000,
        "[" + "a|" * 49_999 + "]",
        ":" + " " * 99_999,
        "<a:" * 33_333,
    ]
    for prompt in cases:
        started = time.perf_counter()
        parse_attention(prompt)
        prompt_schedule(prompt, 20)
        split_and(prompt)
        extract_networks(prompt)
        elapsed = time.perf_counter() - started
        assert elapsed < 10, f"{prompt[:10]!r}... took {elapsed:.1f}s"
