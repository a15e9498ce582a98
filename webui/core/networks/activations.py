"""From a prompt's `<lora:...>` tags to the networks a job applies, and back from an infotext.

Tags follow A1111 v1.10 (extra_networks_lora.py). Kinds `lora` and `lyco` (an old alias) are read here;
other kinds (`hypernet`, an extension's) are left to whoever handles them. Arguments split on `:`; an
argument with `=` is named, the rest positional:

    <lora:name>                  te = unet = 1.0
    <lora:name:w>                te = unet = w
    <lora:name:te_w:unet_w>      each its own weight
    <lora:name:te=0.5:unet=1>    named forms (override the positional ones)

`dyn=` (dynamic rank) is accepted and ignored, with a message. A weight that is not a finite number is a
RequestError on the prompt; an unknown name is a message and the tag is skipped. A name is looked up as
`LoraLibrary.find` does: file stem, relative path, then alias, exactly and then ignoring case. The
same network twice applies twice (deltas add up).

Where tags may stand: anywhere in the prompt, prompt-editing branches and AND parts included; every tag
applies to the whole image for all steps (as in A1111: networks do not switch with the schedule).

Infotext: `Lora hashes: "name: hash, ..."` names each network as the prompt wrote it, with `:` and `,`
removed, and its 12-digit hash. `relink_pasted_prompt` is the way back: a pasted prompt's tags are
renamed to the local file holding that hash, so a LoRA renamed on this disk is still found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from webui.core.networks.apply import AppliedInfo
from webui.core.networks.registry import LoraFile, LoraLibrary
from webui.core.prompts.syntax import ExtraNetwork, extract_networks
from webui.core.types import RequestError

KINDS = ("lora", "lyco")
_REMOVE = str.maketrans("", "", ":,")
_TAG_NAME = re.compile(r"<(lora|lyco):([^:>]+)([:>])")


@dataclass(frozen=True)
class Activation:
    network: LoraFile
    te_weight: float
    unet_weight: float
    mentioned: str  # the name as the prompt wrote it (what the infotext records)


@dataclass(frozen=True)
class ActivationPlan:
    """The networks a prompt asks for, resolved; messages for tags that were skipped or trimmed."""

    activations: tuple[Activation, ...] = ()
    messages: tuple[str, ...] = ()

    @property
    def networks(self) -> list[tuple[LoraFile, float, float]]:
        """The argument `apply_networks` takes."""
        return [(a.network, a.te_weight, a.unet_weight) for a in self.activations]


def _number(tag: ExtraNetwork, value: str) -> float:
    try:
        w = float(value)
    except ValueError:
        w = math.nan
    if not math.isfinite(w):
        args = ":".join((tag.name, *tag.args))
        raise RequestError("prompt", f"<{tag.kind}:{args}>: weight {value!r} is not a number")
    return w


def tag_weights(tag: ExtraNetwork) -> tuple[float, float, list[str]]:
    """(te_weight, unet_weight, notes) of one tag, with A1111's positional and named rules."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for arg in tag.args:
        key, eq, value = arg.partition("=")
        if eq:
            named[key.strip()] = value
        else:
            positional.append(arg)
    te = _number(tag, positional[0]) if positional else 1.0
    te = _number(tag, named["te"]) if "te" in named else te
    unet = _number(tag, positional[1]) if len(positional) > 1 else te
    unet = _number(tag, named["unet"]) if "unet" in named else unet
    notes = []
    if len(positional) > 2 or "dyn" in named:
        notes.append(f"LoRA {tag.name!r}: dynamic rank (dyn) is not supported; the full rank is used")
    return te, unet, notes


def plan_networks(tags: Iterable[ExtraNetwork], library: LoraLibrary) -> ActivationPlan:
    """Resolve the `lora`/`lyco` tags against the library (other kinds are ignored)."""
    activations: list[Activation] = []
    messages: list[str] = []
    for tag in tags:
        if tag.kind.lower() not in KINDS:
            continue
        te, unet, notes = tag_weights(tag)  # a bad weight fails the request even for an unknown name
        messages.extend(notes)
        item = library.find(tag.name)
        if item is None:
            messages.append(f"LoRA {tag.name!r} not found in the LoRA folders; skipped")
            continue
        activations.append(Activation(item, te, unet, tag.name))
    return ActivationPlan(tuple(activations), tuple(messages))


def plan_prompt(prompt: str, library: LoraLibrary) -> ActivationPlan:
    """`plan_networks` over the tags of a whole prompt (all branches, all AND parts)."""
    return plan_networks(extract_networks(prompt)[1], library)


def card_tag(item: LoraFile, library: LoraLibrary, prefer_alias: bool = True) -> str:
    """What clicking a LoRA card inserts, as A1111 does: `<lora:alias:w>` (the alias only when it leads
    back to this file, else the name), w the sidecar's non-zero "preferred weight" else 1, then the
    sidecar's "activation text"."""
    user = library.user_metadata(item)
    name = item.name
    if prefer_alias:
        alias = library.alias(item)
        name = alias if library.find(alias) == item else item.name
    weight = user.get("preferred weight")
    w = float(weight) if isinstance(weight, int | float) and weight and math.isfinite(weight) else 1.0
    tag = f"<lora:{name}:{w:g}>"
    activation = user.get("activation text")
    return f"{tag} {activation}" if isinstance(activation, str) and activation.strip() else tag


def lora_hashes(plan: ActivationPlan, library: LoraLibrary, applied: AppliedInfo | None = None) -> str | None:
    """The infotext value `name: hash, name2: hash2` (None when empty or with hashing off).

    With `applied`, only networks that were applied (or had weight 0) are listed, not skipped ones."""
    used = None if applied is None else {a.key for a in applied.applied}
    seen: dict[str, str] = {}
    for a in plan.activations:
        if used is not None and a.network.key not in used:
            continue
        short = library.shorthash(a.network)
        name = a.mentioned.translate(_REMOVE)
        if short and name not in seen:
            seen[name] = short
    return ", ".join(f"{n}: {h}" for n, h in seen.items()) or None


def parse_lora_hashes(value: str) -> dict[str, str]:
    """`"a: 0123456789ab, b: ..."` (quotes optional) -> {"a": "0123456789ab", ...}; bad pairs dropped."""
    out: dict[str, str] = {}
    for pair in value.strip().strip('"').split(","):
        name, colon, short = pair.rpartition(":")
        if colon and name.strip() and short.strip():
            out[name.strip()] = short.strip().lower()
    return out


def relink_pasted_prompt(prompt: str, hashes: str | dict[str, str], library: LoraLibrary) -> str:
    """Rename each `<lora:name...>` whose hash the infotext gives to the local file with that hash
    (files hashed before, on this machine); tags without a known hash are left as written."""
    table = parse_lora_hashes(hashes) if isinstance(hashes, str) else hashes

    def relink(m: re.Match[str]) -> str:
        short = table.get(m.group(2).translate(_REMOVE))
        item = library.find_by_shorthash(short) if short else None
        return f"<{m.group(1)}:{item.name}{m.group(3)}" if item is not None else m.group(0)

    return _TAG_NAME.sub(relink, prompt)
