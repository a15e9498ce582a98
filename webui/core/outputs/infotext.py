"""Infotext: the generation parameters A1111 stores in every image, as text.

Layout::

    <prompt, may span lines>
    Negative prompt: <negative prompt>        (line left out when empty)
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x768, ..., Version: v1.10.1

The last line holds ``key: value`` pairs in A1111 1.10's key order. Values that a naive reader would
split apart (commas, colons, line breaks, quotes, edge whitespace) are written as JSON strings and put
after the plain ones; ``Version`` always ends the line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping

# A1111 1.10's order for the core parameters ...
CORE_KEYS: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Distilled CFG Scale",  # Forge's, for guidance-distilled models (Flux dev)
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "Module 1",  # Forge's: the separate files (VAE, text encoders) a model was assembled from
    "Module 2",
    "Module 3",
    "Module 4",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Init image hash",
    "RNG",
    "NGMS",
    "Tiling",
)
# ... then the extras, in the order A1111's processing adds them.
EXTRA_KEYS: tuple[str, ...] = (
    "Hires upscale",
    "Hires steps",
    "Hires upscaler",
    "Hires checkpoint",
    "Hires sampler",
    "Hires prompt",
    "Hires negative prompt",
    "Refiner",
    "Refiner switch at",
    "Refiner switch by sampling steps",
    "Mask blur",
    "Masked content",
    "Inpaint area",
    "Masked area padding",
    "Noise multiplier",
    "Emphasis",
    "Shift",  # flow-matching models: the scheduler's shift
    "Lora hashes",
    "TI hashes",
)
APP_KEY = "App"  # our own key: comes after unknown extras
VERSION_KEY = "Version"  # always last

NEGATIVE_PREFIX = "Negative prompt:"
# The keys parse_infotext() adds for the two prompts; a parameter may not use them.
PROMPT_FIELDS = ("Prompt", "Negative prompt")

# A1111's reader, verbatim in meaning: `key: value` or `key: "json string"`, then a comma or the end.
PARAM_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
KEY_PATTERN = re.compile(r"\w[\w \-/]+")
SIZE_PATTERN = re.compile(r"([0-9]+)x([0-9]+)")
MIN_PARAMS = 3  # fewer matches on the last line: it is part of the prompt

# Characters that some reader treats as a line break (str.splitlines) although JSON does not escape them.
_UNESCAPED_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e") | frozenset(_UNESCAPED_BREAKS)


def format_value(value: object) -> str:
    """A parameter value as A1111 prints it: 7.0 -> "7", 0.5 -> "0.5", (512, 768) -> "512x768"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"infotext value must be finite, got {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple | list) and len(value) == 2 and all(_is_int(v) for v in value):
        return f"{value[0]}x{value[1]}"
    return str(value)


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The full infotext; None values are left out."""
    plain: list[str] = []
    quoted: list[str] = []
    version: str | None = None
    for key, value in _ordered(params):
        if value is None:
            continue
        _check_key(key)
        text = format_value(value)
        needs_quotes = _needs_quotes(text)
        item = f"{key}: {_quote(text) if needs_quotes else text}"
        if key == VERSION_KEY:
            version = item
        else:
            (quoted if needs_quotes else plain).append(item)
    items = plain + quoted + ([version] if version is not None else [])
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(items)}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Read any A1111 infotext into {"Prompt", "Negative prompt", every parameter key: value}."""
    *lines, last = text.strip().split("\n")
    found = PARAM_PATTERN.findall(last)
    if len(found) < MIN_PARAMS:
        lines.append(last)
        found = []
    prompt = ""
    negative = ""
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if not in_negative and line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        if in_negative:
            negative = _append_line(negative, line)
        else:
            prompt = _append_line(prompt, line)
    result = {PROMPT_FIELDS[0]: prompt, PROMPT_FIELDS[1]: negative}
    for key, value in found:
        result[key] = _unquote(value)
    return result


def parse_size(text: str) -> tuple[int, int]:
    """ "512x768" -> (512, 768)."""
    match = SIZE_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a WxH size: {text!r}")
    return int(match.group(1)), int(match.group(2))


def _ordered(params: Mapping[str, object]) -> Iterator[tuple[str, object]]:
    """Known keys in A1111's order, unknown ones in the caller's order, then App, then Version."""
    known = CORE_KEYS + EXTRA_KEYS
    for key in known:
        if key in params:
            yield key, params[key]
    for key, value in params.items():
        if key not in known and key not in (APP_KEY, VERSION_KEY):
            yield key, value
    for key in (APP_KEY, VERSION_KEY):
        if key in params:
            yield key, params[key]


def _check_key(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key) or key in PROMPT_FIELDS:
        raise ValueError(
            f"bad infotext key {key!r}: must start with a letter or digit, be at least 2 characters of"
            " letters, digits, spaces, '-', '/' or '_', and not be 'Prompt' or 'Negative prompt'"
        )


def _needs_quotes(text: str) -> bool:
    return any(ch in text for ch in ',:"') or any(ch in _LINE_BREAKS for ch in text) or text != text.strip()


def _quote(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    for raw, escaped in _UNESCAPED_BREAKS.items():
        quoted = quoted.replace(raw, escaped)
    return quoted


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
        return value
    return value.rstrip()


def _append_line(text: str, line: str) -> str:
    # A1111's rule: a separator only once something has been collected.
    return f"{text}\n{line}" if text else line


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
