"""Soft inpainting's and differential diffusion's request fields as plain data: names, A1111's labels and
infotext keys, defaults and ranges. The request (types.py), infotext, the A1111 API's `alwayson_scripts`
"Soft Inpainting" args and the UI all read this one table.

The six parameters keep A1111 1.8's names (its built-in "Soft Inpainting" extension) and its order, which
is also the order of the extension's positional `args` after the enable flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ENABLED_FIELD: Final = "soft_inpainting"
ENABLED_LABEL: Final = "Soft inpainting"  # A1111's accordion label
ENABLED_KEY: Final = "Soft inpainting enabled"  # A1111's infotext key (value True)
SCRIPT_TITLE: Final = "Soft Inpainting"  # A1111's script title (alwayson_scripts key, any case)

DIFFERENTIAL_FIELD: Final = "differential_diffusion"
DIFFERENTIAL_LABEL: Final = "Differential diffusion"
DIFFERENTIAL_KEY: Final = "Differential diffusion"  # ours (A1111 has none): "Differential diffusion: True"


@dataclass(frozen=True)
class Param:
    field: str  # the request field (A1111's element id)
    label: str  # A1111's slider label
    key: str  # A1111's infotext key
    default: float
    minimum: float
    maximum: float
    step: float
    info: str  # A1111's slider help


PARAMS: Final = (
    Param("mask_blend_power", "Schedule bias", "Soft inpainting schedule bias", 1.0, 0.0, 8.0, 0.1,
          "Shifts when preservation of original content occurs during denoising."),
    Param("mask_blend_scale", "Preservation strength", "Soft inpainting preservation strength", 0.5, 0.0,
          8.0, 0.05, "How strongly partially masked content should be preserved."),
    Param("inpaint_detail_preservation", "Transition contrast boost",
          "Soft inpainting transition contrast boost", 4.0, 1.0, 32.0, 0.5,
          "Amplifies the contrast that may be lost in partially masked regions."),
    Param("composite_mask_influence", "Mask influence", "Soft inpainting mask influence", 0.0, 0.0, 1.0,
          0.05, "How strongly the original mask should bias the difference threshold."),
    Param("composite_difference_threshold", "Difference threshold", "Soft inpainting difference threshold",
          0.5, 0.0, 8.0, 0.25,
          "How much an image region can change before the original pixels are not blended in anymore."),
    Param("composite_difference_contrast", "Difference contrast", "Soft inpainting difference contrast",
          2.0, 0.0, 8.0, 0.25, "How sharp the transition should be between blended and not blended."),
)  # fmt: skip
FIELDS: Final = tuple(p.field for p in PARAMS)


def from_infotext(params: Mapping[str, str]) -> dict[str, object]:
    """The request fields an A1111 infotext's keys give (parsed `key: value` pairs). Absent keys mean off,
    as A1111 writes nothing for a disabled script; values that are not numbers are left out."""
    out: dict[str, object] = {
        ENABLED_FIELD: params.get(ENABLED_KEY, "").strip() == "True",
        DIFFERENTIAL_FIELD: params.get(DIFFERENTIAL_KEY, "").strip() == "True",
    }
    for p in PARAMS:
        if p.key in params:
            try:
                out[p.field] = float(params[p.key])
            except ValueError:
                continue
    return out
