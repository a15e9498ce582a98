"""Patching a loaded model with networks for one job, and putting every original weight back after.

`apply_networks(components, [(network, te_weight, unet_weight), ...], cache)` is a context manager:

    with apply_networks(model.components, plan.networks, cache) as info:
        ...encode prompts, sample...        # the model carries the networks here
    # every patched parameter holds its original tensor again, bit for bit

On entry each affected weight is copied (same device), then overwritten with
`(W.float() + sum(multiplier * delta)).to(W.dtype)` (an fp8 layer's weight is left alone and the delta
added as it runs: `models.fp8`), deltas of several networks on one module summed in
float32. On exit, error or not, the copies are written back with `copy_`, so the next job without a
network computes exactly what a fresh start would. A network that does not fit the model (no module
matches, or a shape differs: an SD1 LoRA on SDXL) is skipped whole with a message in `info.messages`;
nothing is half-applied. Parsed files are kept in a byte-bounded LRU (`NetworkCache`), so repeating a
network costs the patch arithmetic only.

Patching changes weights that every user of this Components sees: the cache's per-model lock serializes
patched jobs on one model. Callers must run every job on a model inside `apply_networks` (an empty list
is fine and only takes the lock), so a plain job never runs while another job's networks are on.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from webui.core.models.cache import ModelCache
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict
from webui.core.models.fp8 import Fp8Linear, is_fp8
from webui.core.networks.formats import (
    TEXT_ENCODERS,
    UNET,
    FormatError,
    ParsedNetwork,
    Target,
    WeightPatch,
    looks_like,
    module_index,
    parse_state_dict,
)
from webui.core.networks.peft_meta import PeftConfigs
from webui.core.networks.registry import read_metadata

DEFAULT_CACHE_BYTES = 1 << 30


class NetworkRef(Protocol):
    """What apply needs to know of a network file (a registry `LoraFile` is one)."""

    @property
    def path(self) -> Path: ...
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> tuple[str, int, int]: ...


@dataclass(frozen=True)
class AppliedNetwork:
    name: str
    key: tuple[str, int, int]  # the file's (path, size, mtime_ns)
    te_weight: float
    unet_weight: float
    modules: int  # modules patched


@dataclass(frozen=True)
class AppliedInfo:
    """What a job ran with: networks applied, messages (skipped networks, unused keys)."""

    applied: tuple[AppliedNetwork, ...]  # in request order; networks skipped whole are not here
    messages: tuple[str, ...]
    text_encoder_key: tuple[Hashable, ...]  # identifies the text-encoder patches: add to encoding keys
    # a context in which the patched tensors hold their original values again (exactly), patched again
    # on exit: how a hires pass with other LoRAs starts from the model as loaded
    suspended: Callable[[], AbstractContextManager[None]] = nullcontext

    @property
    def patched(self) -> bool:
        return any(a.modules for a in self.applied)


def load_network(path: Path) -> ParsedNetwork:
    """Read and parse a network file (safetensors, or a weights-only pickle); CPU tensors."""
    try:
        peft = (
            PeftConfigs.from_metadata(read_metadata(path)) if path.suffix.lower() == ".safetensors" else None
        )
        return parse_state_dict(load_state_dict(path), peft)
    except FormatError as e:
        raise CheckpointError(path, f"not a LoRA/LyCORIS network: {e}") from e


class NetworkCache:
    """Parsed networks, least recently used dropped beyond `budget_bytes`; one patch lock per model."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._parsed: ModelCache[ParsedNetwork] = ModelCache(budget_bytes)
        self._locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def lock_for(self, model: Any) -> threading.RLock:
        with self._guard:
            lock = self._locks.get(model)
            if lock is None:
                lock = self._locks[model] = threading.RLock()
            return lock

    def __contains__(self, network: NetworkRef) -> bool:
        return network.key in self._parsed

    @contextmanager
    def use(self, network: NetworkRef) -> Iterator[ParsedNetwork]:
        def load() -> tuple[ParsedNetwork, int]:
            parsed = load_network(network.path)
            return parsed, parsed.nbytes

        with self._parsed.use(network.key, load) as parsed:
            yield parsed

    def clear(self) -> None:
        self._parsed.clear()


_Target = tuple[str, torch.nn.Module, WeightPatch, float]  # (module name, module, patch, multiplier)


def _plan(
    net: NetworkRef, parsed: ParsedNetwork, index: dict[tuple[str, str], Target],
    te_weight: float, unet_weight: float, label: str,
) -> tuple[list[_Target] | None, list[str]]:  # fmt: skip
    """Where one network goes (None: skipped whole) and messages. Checks every shape before any change.

    A network whose denoiser part finds no module here is for another architecture even when its text
    encoder part would fit (Flux and SDXL LoRAs both write CLIP-L as `lora_te1_`): skipped whole."""
    name = net.name
    targets: list[_Target] = []
    missing: list[str] = []
    misfit: list[str] = []
    for (component, flat), patch in parsed.patches.items():
        hit = index.get((component, flat))
        if hit is None:
            missing.append(f"{component}:{flat}")
            continue
        if not patch.fits(hit.shape, hit.has_bias):
            misfit.append(f"{component}.{hit.name}")
            continue
        weight = unet_weight if component == UNET else te_weight
        for module_name, module, part in hit.split(patch):
            targets.append((f"{component}.{module_name}", module, part, weight))
    total = len(parsed.patches)
    if parsed.uses_dora:
        return None, [f"LoRA {name!r} skipped: DoRA networks (dora_scale) are not supported"]
    denoiser_keys = any(component == UNET for component, _ in parsed.patches)
    denoiser_hit = any(t[0].startswith(f"{UNET}.") for t in targets)
    if misfit or not targets or (denoiser_keys and not denoiser_hit):
        example = (misfit or missing)[0]
        kind = looks_like(parsed)
        hint = f"its keys look like a {kind} LoRA" if kind else "is it for another architecture?"
        return None, [
            f"LoRA {name!r} skipped: {net.path.name} does not fit this {label} model ({len(missing)} of "
            f"{total} modules not found, {len(misfit)} with other shapes, e.g. {example}); {hint}"
        ]
    notes = []
    if missing:
        notes.append(f"LoRA {name!r}: {len(missing)} of {total} modules not found in this model, left out")
    return [t for t in targets if t[3] != 0.0], notes


@contextmanager
def apply_networks(
    components: Any,
    networks: Sequence[tuple[NetworkRef, float, float]],
    cache: NetworkCache,
) -> Iterator[AppliedInfo]:
    """Patch `components` (its unet, text_encoder, text_encoder_2) with `(network, te_w, unet_w)` for the
    duration of the block; restores the original tensors exactly on exit."""
    with cache.lock_for(getattr(components, "denoiser", None) or components.unet), ExitStack() as stack:
        messages: list[str] = []
        index = module_index(components) if networks else {}
        label = str(getattr(components, "label", "") or getattr(components, "arch", "this"))
        by_module: dict[str, tuple[torch.nn.Module, list[tuple[WeightPatch, float]]]] = {}
        applied: list[AppliedNetwork] = []
        te_key: list[Hashable] = []
        for net, te_w, unet_w in networks:
            targets: list[_Target] | None = []
            if te_w != 0.0 or unet_w != 0.0:  # weight 0: nothing to change, the file is not even read
                try:
                    parsed = stack.enter_context(cache.use(net))
                except (OSError, CheckpointError) as e:
                    messages.append(f"LoRA {net.name!r} skipped: {e}")
                    continue
                targets, notes = _plan(net, parsed, index, te_w, unet_w, label)
                messages.extend(notes)
            if targets is None:
                continue
            applied.append(AppliedNetwork(net.name, net.key, te_w, unet_w, len(targets)))
            for name, module, patch, weight in targets:
                by_module.setdefault(name, (module, []))[1].append((patch, weight))
            if any(t[0].startswith(tuple(f"{te}." for te in TEXT_ENCODERS)) for t in targets):
                te_key.append((net.key, te_w))
        backups: list[tuple[torch.Tensor, torch.Tensor]] = []
        fp8_deltas: list[tuple[Fp8Linear, torch.Tensor]] = []  # fp8 layers carry theirs beside the weight

        def set_fp8_deltas(on: bool) -> None:
            for module, delta in fp8_deltas:
                module.weight_delta = delta if on else None

        @contextmanager
        def suspended() -> Iterator[None]:
            with torch.no_grad():
                patched = [(param, param.detach().clone()) for param, _ in backups]
                for param, original in backups:
                    param.copy_(original)
            set_fp8_deltas(False)
            try:
                yield
            finally:
                with torch.no_grad():
                    for param, value in patched:
                        param.copy_(value)
                set_fp8_deltas(True)

        try:
            with torch.no_grad():
                for module, patches in by_module.values():
                    _patch_module(module, patches, backups, fp8_deltas)
            set_fp8_deltas(True)
            yield AppliedInfo(tuple(applied), tuple(messages), tuple(te_key), suspended)
        finally:
            set_fp8_deltas(False)
            with torch.no_grad():
                for param, original in reversed(backups):
                    param.copy_(original)


def _patch_module(
    module: torch.nn.Module,
    patches: list[tuple[WeightPatch, float]],
    backups: list[tuple[torch.Tensor, torch.Tensor]],
    fp8_deltas: list[tuple[Fp8Linear, torch.Tensor]],
) -> None:
    """Add the patches' deltas to the module's weight and bias, keeping the originals in `backups`; an
    fp8 layer's weight delta goes to `fp8_deltas` in the compute dtype (fp8 would round it away)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # module_index lists only modules with a weight
    bias: torch.Tensor | None = getattr(module, "bias", None)
    dw: torch.Tensor | None = None
    db: torch.Tensor | None = None
    for patch, multiplier in patches:
        d = patch.delta(weight.shape, weight.device)
        if d is not None:
            dw = d * multiplier if dw is None else dw.add_(d, alpha=multiplier)
        b = patch.bias_delta(weight.device) if bias is not None else None
        if b is not None:
            db = b * multiplier if db is None else db.add_(b, alpha=multiplier)
    if dw is not None and isinstance(module, Fp8Linear) and is_fp8(weight):
        dtype = bias.dtype if bias is not None else torch.float32
        fp8_deltas.append((module, dw.reshape(weight.shape).to(dtype)))
        dw = None
    for param, delta in ((weight, dw), (bias, db)):
        if param is None or delta is None:
            continue
        backups.append((param, param.detach().clone()))
        param.copy_((param.float() + delta.reshape(param.shape)).to(param.dtype))
