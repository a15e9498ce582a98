"""The model families Sfumato runs, as plain data, and how to find the one for an arch or a model.

    family("sdxl")                       the Family of an arch name (the shipped config folder)
    of(parts)                            the Family of loaded Components (by their arch)
    pick("sd2", inpaint, "v_prediction") the arch a detected checkpoint is built as
    of_flow_tensors(shapes, prefix)      the flow family whose denoiser a file holds (or None)

Adding a family is adding a module here (its `FAMILIES`), its shipped configs and a tiny fixture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from webui.core.families import flux, sd1, sd2, sd3, sdxl
from webui.core.families.base import Family, LatentFormat, Task, TextConditioning, TextEncoder

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "Family",
    "LatentFormat",
    "Task",
    "TextConditioning",
    "TextEncoder",
    "edit_arch",
    "family",
    "of",
    "of_flow_tensors",
    "pick",
]

FAMILIES: tuple[Family, ...] = (*sd1.FAMILIES, *sd2.FAMILIES, *sdxl.FAMILIES, *sd3.FAMILIES, *flux.FAMILIES)
ARCHITECTURES: tuple[str, ...] = tuple(f.arch for f in FAMILIES)


class HasArch(Protocol):
    @property
    def arch(self) -> str: ...


def family(arch: str) -> Family:
    for f in FAMILIES:
        if f.arch == arch:
            return f
    raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}")


def of(model: HasArch) -> Family:
    """The family of a loaded model (anything with an `arch`, e.g. Components)."""
    return family(model.arch)


def pick(group: str, inpaint: bool, prediction_type: str) -> Family:
    """The arch of a checkpoint that detection calls `group`: among the group's archs, the one whose
    inpaint / v-prediction conditions the checkpoint meets (an arch without a condition takes any)."""
    v = prediction_type == "v_prediction"
    candidates = [f for f in FAMILIES if f.group == group]
    if not candidates:
        groups = ", ".join(dict.fromkeys(f.group for f in FAMILIES))
        raise ValueError(f"unknown model family {group!r}; valid names: {groups}")
    for f in candidates:
        if f.when_inpaint in (None, inpaint) and f.when_v in (None, v):
            return f
    return candidates[0]


def edit_arch(group: str) -> Family | None:
    """The instruct-pix2pix style arch of a group (a UNet taking latents + source image), if any."""
    return next((f for f in FAMILIES if f.group == group and f.edit), None)


def of_flow_tensors(shapes: Mapping[str, object], prefix: str = "") -> Family | None:
    """The flow family whose original-layout denoiser is in a file with these keys under `prefix`:
    the group by its `files.mark`, then the arch whose `files.arch_mark` is there (else the plain one)."""
    group = [f for f in FAMILIES if f.files is not None and prefix + f.files.mark in shapes]
    for f in group:
        if f.files is not None and f.files.arch_mark is not None and prefix + f.files.arch_mark in shapes:
            return f
    return next((f for f in group if f.files is not None and f.files.arch_mark is None), None)
