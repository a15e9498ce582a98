"""Infotext in A1111's layout: byte-exact formatting, reading real A1111 texts, and a round-trip property."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from webui.core.outputs.infotext import (
    CORE_KEYS,
    EXTRA_KEYS,
    format_infotext,
    format_value,
    parse_infotext,
    parse_size,
)

# The example from reference/infotext.md, which sd-parsers and sd-prompt-reader both read fully.
REFERENCE_TEXT = (
    "a photo of a cat wearing a space suit, (masterpiece:1.2), <lora:add_detail:0.8>\n"
    "Negative prompt: blurry, lowres, bad anatomy\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, "
    "Hires upscale: 2, Hires upscaler: Latent, Version: v1.10.1"
)
REFERENCE_PARAMS: dict[str, object] = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 1234567890,
    "Size": (512, 768),
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Denoising strength": 0.5,
    "Clip skip": 2,
    "Hires upscale": 2.0,
    "Hires upscaler": "Latent",
    "Version": "v1.10.1",
}


def test_reference_example_formats_byte_identically_from_any_field_order() -> None:
    prompt = "a photo of a cat wearing a space suit, (masterpiece:1.2), <lora:add_detail:0.8>"
    negative = "blurry, lowres, bad anatomy"
    assert format_infotext(prompt, negative, REFERENCE_PARAMS) == REFERENCE_TEXT
    items = list(REFERENCE_PARAMS.items())
    random.Random(7).shuffle(items)
    assert list(dict(items)) != list(REFERENCE_PARAMS)
    assert format_infotext(prompt, negative, dict(items)) == REFERENCE_TEXT


def test_reference_example_parses_into_its_fields() -> None:
    parsed = parse_infotext(REFERENCE_TEXT)
    prompt = "a photo of a cat wearing a space suit, (masterpiece:1.2), <lora:add_detail:0.8>"
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == "blurry, lowres, bad anatomy"
    assert {k: v for k, v in parsed.items() if "rompt" not in k} == {
        k: format_value(v) for k, v in REFERENCE_PARAMS.items()
    }
    assert parse_size(parsed["Size"]) == (512, 768)


# Hand-written in the shape A1111 1.10 (and older releases) write.
A1111_MULTILINE = """masterpiece, best quality,
1girl, solo, looking at viewer,
BREAK
cherry blossoms, (sunset:1.3)
Negative prompt: (worst quality, low quality:1.4),
EasyNegative, bad-hands-5
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3075810412, Size: 512x768, \
Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, \
Hires upscale: 1.75, Hires steps: 12, Hires upscaler: R-ESRGAN 4x+ Anime6B, \
Lora hashes: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef", \
TI hashes: "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c", Emphasis: No norm, Version: v1.10.1"""


def test_a1111_multiline_prompt_negative_and_quoted_hashes() -> None:
    parsed = parse_infotext(A1111_MULTILINE)
    assert parsed["Prompt"] == (
        "masterpiece, best quality,\n1girl, solo, looking at viewer,\nBREAK\ncherry blossoms, (sunset:1.3)"
    )
    assert parsed["Negative prompt"] == "(worst quality, low quality:1.4),\nEasyNegative, bad-hands-5"
    assert parsed["Steps"] == "28"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "6.5"
    assert parsed["Seed"] == "3075810412"
    assert parsed["Size"] == "512x768"
    assert parsed["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef"
    assert parsed["TI hashes"] == "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c"
    assert parsed["Emphasis"] == "No norm"
    assert parsed["Version"] == "v1.10.1"


def test_a1111_old_text_without_negative_and_combined_sampler_name() -> None:
    text = (
        "a castle on a hill, highly detailed\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 768x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, ENSD: 31337, Version: v1.6.0"
    )
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a castle on a hill, highly detailed"
    assert parsed["Negative prompt"] == ""
    assert parsed["Sampler"] == "DPM++ 2M Karras"
    assert parsed["ENSD"] == "31337"
    assert "Schedule type" not in parsed


def test_quoted_values_with_escapes_and_newlines() -> None:
    text = (
        "portrait\n"
        'Steps: 20, Sampler: Euler a, CFG scale: 7, Hires prompt: "a \\"quoted\\" word,\\nsecond line", '
        'Template: "C:\\\\path\\\\x", Version: v1.10.1'
    )
    parsed = parse_infotext(text)
    assert parsed["Hires prompt"] == 'a "quoted" word,\nsecond line'
    assert parsed["Template"] == "C:\\path\\x"
    assert parsed["Version"] == "v1.10.1"


def test_last_line_with_fewer_than_three_pairs_is_prompt() -> None:
    parsed = parse_infotext("a cat\nstyle: watercolor, mood: calm")
    assert parsed == {"Prompt": "a cat\nstyle: watercolor, mood: calm", "Negative prompt": ""}
    only_negative = parse_infotext("Negative prompt: ugly\nSteps: 5, Sampler: Euler, Seed: 1")
    assert only_negative["Prompt"] == ""
    assert only_negative["Negative prompt"] == "ugly"
    assert only_negative["Seed"] == "1"


def test_windows_line_endings_and_surrounding_space() -> None:
    parsed = parse_infotext("  a dog \r\nNegative prompt: cat\r\nSteps: 5, Sampler: Euler, Seed: 9\r\n")
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Seed"]) == ("a dog", "cat", "9")


def test_format_rules() -> None:
    text = format_infotext(
        "p",
        "",
        {
            "Version": "v0.1.0",
            "App": "Sfumato",
            "Lora hashes": "add_detail: 7c6bad76eb54",
            "My extra": "x",
            "Seed": 5,
            "Face restoration": None,
            "Steps": 20,
            "CFG scale": 7.25,
            "Tiling": True,
            "Mask blur": 4,
            "Sampler": "Euler a",
        },
    )
    assert text == (
        "p\nSteps: 20, Sampler: Euler a, CFG scale: 7.25, Seed: 5, Tiling: True, Mask blur: 4, "
        'My extra: x, App: Sfumato, Lora hashes: "add_detail: 7c6bad76eb54", Version: v0.1.0'
    )
    assert "Negative prompt" not in text


def test_format_value() -> None:
    assert [format_value(v) for v in (7.0, 0.5, 2, 1e-05, False, (1024, 576), "x")] == [
        "7",
        "0.5",
        "2",
        "1e-05",
        "False",
        "1024x576",
        "x",
    ]
    with pytest.raises(ValueError):
        format_value(float("nan"))


@pytest.mark.parametrize("key", ["Prompt", "Negative prompt", "x", "bad:key", " Steps", "a,b"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="bad infotext key"):
        format_infotext("p", "", {"Steps": 1, "Seed": 2, key: 3})


def test_parse_size() -> None:
    assert parse_size("512x768") == (512, 768)
    for bad in ("512", "512x", "x768", "512*768", "-1x5"):
        with pytest.raises(ValueError):
            parse_size(bad)


# ---- round trip -------------------------------------------------------------------------------------

_TRICKY = list(",:;\"\\'()[]{}<>|=#-/ _\t") + ["猫", "é", "ß", "🙂", "\u00a0", "\u2028"]
_FRAGMENTS = ["BREAK", "AND", "Steps: 20", ", Seed: 1, ", "(masterpiece:1.2)", "<lora:x:0.8>", '\\"', "\\n"]
_chars = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    st.sampled_from(_TRICKY),
)
_line = st.lists(st.one_of(st.text(_chars, max_size=6), st.sampled_from(_FRAGMENTS)), max_size=6).map("".join)


def _clean_lines(text: str) -> bool:
    lines = text.split("\n")
    return text == text.strip() and all(
        line == line.strip() and not line.startswith("Negative prompt:") for line in lines
    )


_prompt = st.lists(_line, max_size=4).map("\n".join).filter(_clean_lines)
_known_key = st.sampled_from(CORE_KEYS + EXTRA_KEYS + ("App", "Version"))
_free_key = st.from_regex(r"\w[\w \-/]+", fullmatch=True).filter(
    lambda k: k not in ("Prompt", "Negative prompt")
)
_value_chars = st.one_of(st.characters(codec="utf-8", exclude_categories=["Cs"]), st.sampled_from(_TRICKY))
_simple_value = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)),
    st.lists(
        st.one_of(
            st.text(_value_chars),
            st.sampled_from(_FRAGMENTS),
        ),
        max_size=4,
    ).map("".join),
)
_awkward_value = st.sampled_from([" x", "y ", "\u3000z", "a\u2028b", "a\x85b", "a\rb", '"hi"', "", "  "])
_value = st.one_of(_simple_value, _awkward_value)
_params = st.dictionaries(st.one_of(_known_key, _free_key), _value, max_size=12)


@settings(max_examples=400, deadline=None)
@given(prompt=_prompt, negative=_prompt, params=_params)
@example(prompt="a\nb", negative="", params={"Steps": 1, "Seed": 2, "Lead": " x", "Trail": "y "})
@example(prompt="", negative="n", params={"Steps": 1, "Seed": 2, "Seps": "a\u2028b\x85c", "Quoted": '"q"'})
def test_round_trip(prompt: str, negative: str, params: dict[str, object]) -> None:
    present = {k: format_value(v) for k, v in params.items() if v is not None}
    assume(len(present) >= 3)  # fewer pairs and A1111 reads the last line as prompt
    text = format_infotext(prompt, negative, params)
    last_line = text.split("\n")[-1]
    assert last_line.splitlines() == [last_line]  # no reader that uses str.splitlines() cuts it
    parsed = parse_infotext(text)
    assert parsed.pop("Prompt") == prompt
    assert parsed.pop("Negative prompt") == negative
    assert parsed == present


@given(prompt=_prompt, params=_params)
def test_quoted_values_come_after_plain_ones(prompt: str, params: dict[str, object]) -> None:
    present = {k: v for k, v in params.items() if v is not None}
    assume(len(present) >= 3)
    last_line = format_infotext(prompt, "", params).split("\n")[-1]
    pairs = [item.partition(":") for item in _split_items(last_line)]
    keys = [key for key, _, _ in pairs]
    quoted = [value.lstrip(" ").startswith('"') for _, _, value in pairs]
    assert sorted(keys) == sorted(present)
    if "Version" in keys:
        assert keys[-1] == "Version"
        quoted = quoted[:-1]
    assert quoted == sorted(quoted)  # every plain value before every quoted one


def _split_items(line: str) -> list[str]:
    """Split a formatted last line on the ", " separators outside JSON strings."""
    items: list[str] = []
    current = ""
    in_string = escaped = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif line.startswith(", ", i):
            items.append(current)
            current = ""
            i += 2
            continue
        current += ch
        i += 1
    items.append(current)
    return items


def test_a1111_reader_defaults_fill_what_the_text_leaves_out() -> None:
    from webui.core.outputs.infotext_defaults import with_a1111_defaults

    text = (
        "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x768, Seed resize from: 64x32, "
        "Clip skip: 2, Hires upscale: 2, Hires resize: 1024x1536"
    )
    got = with_a1111_defaults(parse_infotext(text))
    assert got["Clip skip"] == "2"  # present: kept as written
    assert (got["Size-1"], got["Size-2"], got["Size"]) == ("512", "768", "512x768")
    assert (got["Seed resize from-1"], got["Hires resize-1"], got["Hires resize-2"]) == ("64", "1024", "1536")
    assert got["RNG"] == "GPU" and got["Schedule type"] == "Automatic" and got["Masked area padding"] == 32
    assert got["Hires sampler"] == "Use same sampler" and got["Emphasis"] == "Original"
    assert "Cache FP16 weight for LoRA" not in got
    bare = with_a1111_defaults(parse_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 5"))
    assert bare["Clip skip"] == "1" and bare["Hires resize-1"] == 0 and bare["Prompt"] == "a cat"
    fp8 = with_a1111_defaults(parse_infotext("a 1x2\nSteps: 2, Sampler: Euler, FP8 weight: Enable for SDXL"))
    assert fp8["Cache FP16 weight for LoRA"] is False and "Prompt-1" not in fp8
