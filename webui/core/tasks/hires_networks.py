"""The hires pass's own prompts and LoRAs, as A1111 runs them.

A1111 applies the styles to the hires prompts too, and activates the LoRA tags of the hires prompt for
the second pass (by default the hires prompt is the prompt, so nothing changes). Here:

- `plan_hires` gives the second pass's styled prompts and, when its LoRA tags ask for other networks
  or weights than the first pass's, their plan;
- `second_pass_scope` is the context the second pass runs in on the job's own checkpoint: the first
  pass's patch is suspended (the tensors hold their loaded values again, exactly), the hires networks are
  applied, and it yields the `PassModel` with an `encode` keyed like a job with those networks; on exit
  the first pass's patch is back, bit for bit. (A hires pass on its own checkpoint, `hr_checkpoint_name`,
  has that model patched with the hires networks for the job: see webui.core.pass_models.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from webui.core.networks.activations import ActivationPlan, lora_hashes, parse_lora_hashes, plan_prompt
from webui.core.networks.apply import AppliedInfo, NetworkCache, apply_networks
from webui.core.networks.registry import LoraFile, LoraLibrary
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder
from webui.core.prompts.styles import StyleStore
from webui.core.tasks.context import PassModel
from webui.core.types import GenerationRequest, Txt2ImgRequest

Networks = Sequence[tuple[LoraFile, float, float]]


@dataclass(frozen=True)
class HiresPlan:
    prompt: str  # styles applied
    negative: str
    networks: ActivationPlan | None  # None: the first pass's networks serve the second pass too
    messages: tuple[str, ...] = ()  # about the hires prompt's LoRA tags (not found, ...)


def plan_hires(
    request: GenerationRequest, styles: StyleStore, loras: LoraLibrary, first: ActivationPlan
) -> HiresPlan | None:
    """The second pass's prompts and networks; None when it simply reuses the first pass's prompts."""
    if not isinstance(request, Txt2ImgRequest) or not request.enable_hr:
        return None
    if not request.hr_prompt and not request.hr_negative_prompt:
        return None
    prompt, negative = styles.apply(
        request.hr_prompt or request.prompt,
        request.hr_negative_prompt or request.negative_prompt,
        request.styles,
    )
    tags = "" if request.disable_extra_networks else prompt
    plan = plan_prompt(tags, loras) if request.hr_prompt else first
    messages = tuple(m for m in plan.messages if m not in first.messages)
    changed = bool(network_delta(first.networks, plan.networks))
    return HiresPlan(prompt, negative, plan if changed else None, messages)


def network_delta(first: Networks, second: Networks) -> list[tuple[LoraFile, float, float]]:
    """What to add to a model patched with `first` to have it patched with `second`: per network, the
    weight differences (te, unet), the unchanged ones left out."""
    totals: dict[Any, list[Any]] = {}
    for sign, networks in ((-1.0, first), (1.0, second)):
        for net, te, unet in networks:
            entry = totals.setdefault(net.key, [net, 0.0, 0.0])
            entry[1] += sign * te
            entry[2] += sign * unet
    return [(net, te, unet) for net, te, unet in totals.values() if te != 0.0 or unet != 0.0]


def second_pass_scope(
    components: Any,
    first: AppliedInfo,
    networks: Networks,
    cache: NetworkCache,
    model_key: Any,
    encodings: EncodingCache,
    embeddings: Any,
    clip_skip: int,
    messages: list[str],
) -> Callable[[], AbstractContextManager[PassModel]]:
    """A context for the second pass: the model patched with `networks` instead of the first pass's
    (`first`), and an `encode` for its prompts, cached as for any job with those networks. Messages about
    the networks (another architecture, unused keys) are appended to `messages`."""

    @contextmanager
    def scope() -> Iterator[PassModel]:
        with first.suspended(), apply_networks(components, networks, cache) as applied:
            messages.extend(m for m in applied.messages if m not in messages)
            encoder = PromptEncoder(components, (model_key, applied.text_encoder_key), encodings, embeddings)

            def encode(prompt: str, negative: str, steps: int) -> Any:
                return (
                    encoder.schedule(prompt, steps, clip_skip),
                    encoder.schedule(negative, steps, clip_skip, multicond=False),
                )

            yield PassModel(components, encode)

    return scope


def merged_hashes(first: str | None, plan: ActivationPlan | None, loras: LoraLibrary) -> str | None:
    """The infotext's `Lora hashes` of both passes: the first pass's, then the hires pass's new ones."""
    if plan is None:
        return first
    seen = parse_lora_hashes(first or "")
    for name, short in parse_lora_hashes(lora_hashes(plan, loras) or "").items():
        seen.setdefault(name, short)
    return ", ".join(f"{n}: {h}" for n, h in seen.items()) or None
