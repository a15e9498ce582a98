"""split_and and extract_networks against A1111 v1.10 (values produced by A1111's own regex code)."""

from __future__ import annotations

import dataclasses

import pytest

from webui.core.prompts import ExtraNetwork, extract_networks, split_and

AND_CASES: list[tuple[str, list[tuple[str, float]]]] = [
    ("a AND b", [("a", 1.0), (" b", 1.0)]),
    ("a AND b:0.5", [("a", 1.0), (" b", 0.5)]),
    ("a:1.5 AND b : -2 AND c", [("a", 1.5), (" b", -2.0), (" c", 1.0)]),
    ("cat:2", [("cat", 2.0)]),
    ("cat :  .5  ", [("cat", 0.5)]),
    ("a ANDb AND", [("a ANDb", 1.0), ("", 1.0)]),
    ("AND", [("", 1.0), ("", 1.0)]),
    ("a\nAND\nb:3\n", [("a", 1.0), ("\nb", 3.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("x: 1.", [("x", 1.0)]),
    (":3", [("", 3.0)]),
    ("a (b:1.2) AND c", [("a (b:1.2)", 1.0), (" c", 1.0)]),
    ("BRAND AND_ ANDY", [("BRAND AND_ ANDY", 1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("  lead AND trail  ", [("  lead", 1.0), (" trail", 1.0)]),
    ("a:1:2", [("a:1", 2.0)]),
    ("x:+3", [("x", 3.0)]),
    ("x:1.2.3", [("x:1.2.3", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), AND_CASES)
def test_split_and_matches_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


NETWORK_CASES: list[tuple[str, str, list[tuple[str, str, tuple[str, ...]]]]] = [
    ("a <lora:foo:0.8> b", "a  b", [("lora", "foo", ("0.8",))]),
    ("<lora:x:0.6:0.3>", "", [("lora", "x", ("0.6", "0.3"))]),
    ("<hypernet:h:1><lyco:y>", "", [("hypernet", "h", ("1",)), ("lyco", "y", ())]),
    ("<lora:>", "<lora:>", []),
    ("<lora::1>", "", [("lora", "", ("1",))]),
    ("<:a>", "<:a>", []),
    ("<a b:c>", "<a b:c>", []),
    ("<lora:a", "<lora:a", []),
    ("x<lora:a<b:c>y", "xy", [("lora", "a<b", ("c",))]),
    ("<lora:a:1>>", ">", [("lora", "a", ("1",))]),
    ("a < b > c", "a < b > c", []),
    ("<l:a\nb>", "", [("l", "a\nb", ())]),
    ("<\u00fa:\u00f1>", "", [("\u00fa", "\u00f1", ())]),
    ("<lora:a:1><lora:b:2>text", "text", [("lora", "a", ("1",)), ("lora", "b", ("2",))]),
]


@pytest.mark.parametrize(("prompt", "text", "networks"), NETWORK_CASES)
def test_extract_networks_matches_a1111(
    prompt: str, text: str, networks: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    got_text, got = extract_networks(prompt)
    assert got_text == text
    assert got == [ExtraNetwork(kind, name, args) for kind, name, args in networks]


def test_extra_network_is_frozen() -> None:
    net = ExtraNetwork("lora", "x", ("1",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.name = "y"  # type: ignore[misc]


def test_long_inputs_stay_linear() -> None:
    """A1111's regexes backtrack quadratically on these; the results must still be A1111's."""
    assert split_and("a AND" + " " * 50_000 + ":2") == [("a", 1.0), ("", 2.0)]
    text, nets = extract_networks("<a:" * 30_000)
    assert (text, nets) == ("<a:" * 30_000, [])
    text, nets = extract_networks("<lora:x:1>" + "<b:" * 30_000)
    assert nets == [ExtraNetwork("lora", "x", ("1",))] and text == "<b:" * 30_000
