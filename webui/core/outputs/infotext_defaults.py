"""What A1111's reader fills in for keys an infotext leaves out, so clients of `/sdapi/v1/png-info` get
the parameters A1111 would give them (its `parse_generation_parameters`, v1.10).

An infotext omits a key whose value was the default when the image was made ("Clip skip: 1" is never
written). A1111's reader puts those defaults back, and splits every `WxH` value into `<key>-1` and
`<key>-2`; clients (and send-to buttons) read the parameters that way. Values parsed from the text stay
strings, as A1111 leaves them; the defaults have A1111's types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SIZE = re.compile(r"^(\d+)x(\d+)$")

# key -> the value A1111's reader assumes when the infotext has no such key (in its order)
A1111_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"),
    ("Hires resize-1", 0),
    ("Hires resize-2", 0),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
    ("RNG", "GPU"),  # no RNG key: the image was made with the default, the GPU generator
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
    ("Emphasis", "Original"),
    ("Refiner switch by sampling steps", False),
)


def with_a1111_defaults(params: Mapping[str, str]) -> dict[str, Any]:
    """Parsed infotext parameters (webui.core.outputs.infotext.parse_infotext) as A1111's reader gives
    them: `WxH` values also as `<key>-1`/`<key>-2` (the joined key is kept too), missing keys defaulted."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[key] = value
        m = _SIZE.match(value) if key not in ("Prompt", "Negative prompt") else None
        if m is not None:
            out[f"{key}-1"], out[f"{key}-2"] = m.group(1), m.group(2)
    for key, value in A1111_DEFAULTS:
        out.setdefault(key, value)
    if out["FP8 weight"] != "Disable":
        out.setdefault("Cache FP16 weight for LoRA", False)
    return out
