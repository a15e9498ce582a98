"""Where model parts wait and where they run: `--medvram` and `--lowvram`.

Every part of a loaded model (text encoders, denoiser, VAE, an extension's ControlNet) is *stored* on
the CPU and *computes* on the worker's device. An `Offloader` (one per model manager, so one per job
worker and device) moves parts between the two with forward pre-hooks on the modules themselves, so
every caller (prompt encoding, the sampling loop, VAE encode/decode, previews, extensions) gets the
right placement without knowing about it:

- "medvram": a part moves to the compute device when it is called, and every part of another group
  (text encoders, denoiser + ControlNets, VAE) goes back to storage first. Only the part in use sits
  on the GPU: text encoders, then the denoiser, then the VAE, in turn.
- "lowvram": as medvram, and the denoiser group is never moved whole: each of its blocks moves in
  right before it runs and back right after, so only one block's weights are on the GPU at a time (a
  block bigger than `block_bytes` is split into its own children).
- "none": nothing is attached; models are loaded straight onto the device.

Inputs a caller placed on the storage device are moved to the compute device by the part's hook, and
`compute_place(module)` tells callers where a part runs (device, dtype) wherever it waits now.
`moves` records every move (part, where to) so tests and benchmarks can see the sequence.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

VRAM_MODES = ("none", "medvram", "lowvram")
Group = Literal["text", "denoiser", "vae"]
PLACE_ATTR = "_sfumato_compute_place"  # set on an attached module: (device, dtype) it computes in
DEFAULT_BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Place:
    """A device and, optionally, a dtype to hold floating-point weights in (None: keep each tensor's).
    A storage dtype only serves tests: on a CPU-only machine weights that left the compute place are
    then visibly in another dtype (float64 -> float32 round trips exactly)."""

    device: str = "cpu"
    dtype: torch.dtype | None = None


@dataclass(frozen=True)
class Move:
    part: str  # "unet", "vae", "text_encoder_2", "unet.down_blocks.1", "controlnet"...
    to: Literal["compute", "storage"]


@dataclass(eq=False)
class _Part:
    name: str
    group: Group
    module: weakref.ref[torch.nn.Module]
    dtype: torch.dtype  # the compute dtype, as the part was loaded
    streamed: bool
    owner: int  # parts of one group share the device only with parts of the same owner (one model)
    handles: list[Any] = field(default_factory=list)
    resident: bool = False  # (medvram, and lowvram's whole-part groups) on the compute device


def compute_place(module: Any) -> tuple[torch.device, torch.dtype]:
    """Where `module` computes: its offloader's compute place when attached, else where its first
    parameter is."""
    place = getattr(module, PLACE_ATTR, None)
    if place is not None:
        return place  # type: ignore[no-any-return]
    p = next(module.parameters())
    return p.device, p.dtype


def _nbytes(module: torch.nn.Module, recurse: bool = True) -> int:
    tensors = [*module.parameters(recurse=recurse), *module.buffers(recurse=recurse)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _has_forward(module: torch.nn.Module) -> bool:
    """Containers (ModuleList, ModuleDict) are never called: their elements are."""
    return not isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))


def blocks(root: torch.nn.Module, block_bytes: int) -> Iterator[tuple[str, torch.nn.Module, bool]]:
    """The streaming plan of a denoiser: (name, module, whole) where `whole` modules move in and out
    as one block and the others (the root, split modules) only move their own direct tensors. The
    root is always split (and listed first: its hook makes the part active); ModuleLists always give
    their elements; a module over `block_bytes` is split into its children."""

    def walk(name: str, module: torch.nn.Module, top: bool) -> Iterator[tuple[str, torch.nn.Module, bool]]:
        children = list(module.named_children())
        split = top or not _has_forward(module) or (_nbytes(module) > block_bytes and children)
        if not split:
            if _nbytes(module):
                yield name, module, True
            return
        if top or (_has_forward(module) and _nbytes(module, recurse=False)):
            yield name, module, False
        for child_name, child in children:
            yield from walk(f"{name}.{child_name}" if name else child_name, child, False)

    yield from walk("", root, True)


class Offloader:
    """Moves the parts of one worker's models between storage and compute (see the module doc)."""

    def __init__(
        self,
        mode: str,
        compute: str,
        storage: Place = Place(),
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        if mode not in VRAM_MODES[1:]:
            raise ValueError(f"offload mode must be medvram or lowvram, got {mode!r}")
        self.mode = mode
        self.compute = torch.device(compute)
        self.storage = storage
        self.block_bytes = block_bytes
        self.moves: list[Move] = []
        self._parts: list[_Part] = []
        self._streamed_in: dict[int, tuple[str, weakref.ref[torch.nn.Module], bool]] = {}
        self._lock = threading.RLock()

    @property
    def storage_device(self) -> str:
        return self.storage.device

    # -- attaching -----------------------------------------------------------------------------------
    def attach(self, name: str, module: torch.nn.Module, group: Group, owner: object = None) -> None:
        """Store `module` and hook it so that it moves to the compute device when it runs. Parts of the
        same group and `owner` (one checkpoint's text encoders) may sit on the device together; an
        owner of None (an extension's ControlNet) shares it with any part of its group. Idempotent for
        a module already attached (a VAE shared by two checkpoints)."""
        with self._lock:
            if getattr(module, PLACE_ATTR, None) is not None:
                return
            first = next(module.parameters())
            dtype = first.dtype
            streamed = self.mode == "lowvram" and group == "denoiser"
            key = 0 if owner is None else id(owner)
            part = _Part(name, group, weakref.ref(module), dtype, streamed, key)
            setattr(module, PLACE_ATTR, (self.compute, dtype))
            self._to(module, self.storage)
            self._parts = [p for p in self._parts if p.module() is not None] + [part]
            if streamed:
                self._hook_blocks(part, module)
            else:
                self._hook_part(part, module, everywhere=group == "vae")

    def attach_components(self, parts: Any) -> None:
        """The modules of a `Components` by role: text encoders, the denoiser, the VAE."""
        for name, module in parts.modules().items():
            text = name.startswith("text_encoder")
            group: Group = "vae" if name == "vae" else "text" if text else "denoiser"
            self.attach(name, module, group, owner=parts.denoiser)

    def _hook_part(self, part: _Part, module: torch.nn.Module, everywhere: bool) -> None:
        """The part moves in when it (or a direct child; for a VAE, whose encode/decode and tiles call
        submodules, any submodule) is called; tensors the caller placed elsewhere follow it."""

        def pre(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self.activate(part)
            return self._inputs(args), self._inputs(kwargs)

        targets = list(module.modules()) if everywhere else [module, *module.children()]
        for m in targets:
            part.handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))

    def _hook_blocks(self, part: _Part, root: torch.nn.Module) -> None:
        for name, module, whole in blocks(root, self.block_bytes):
            label = f"{part.name}.{name}" if name else part.name
            is_root = module is root

            def pre(
                m: torch.nn.Module,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                label: str = label,
                whole: bool = whole,
                is_root: bool = is_root,
            ) -> Any:
                if is_root:
                    self.activate(part)
                self._stream_in(label, m, whole, part.dtype)
                if is_root:
                    return self._inputs(args), self._inputs(kwargs)
                return None

            def post(m: torch.nn.Module, _a: Any, _o: Any, label: str = label, whole: bool = whole) -> None:
                self._stream_out(label, m, whole)

            part.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            part.handles.append(module.register_forward_hook(post))

    def detach(self, module: torch.nn.Module) -> None:
        """Remove the hooks; the module stays where it is."""
        with self._lock:
            for p in [p for p in self._parts if p.module() is module]:
                for h in p.handles:
                    h.remove()
                self._parts.remove(p)
            if hasattr(module, PLACE_ATTR):
                delattr(module, PLACE_ATTR)

    # -- moving --------------------------------------------------------------------------------------
    def activate(self, part: _Part) -> None:
        """`part` is about to run: every resident part of another group goes to storage, then `part`
        moves in (streamed parts move block by block instead)."""
        with self._lock:
            if part.resident:
                return
            for other in self._parts:
                shares = other.group == part.group and 0 in (other.owner, part.owner)
                if other.resident and not (shares or (other.group, other.owner) == (part.group, part.owner)):
                    self._move(other, "storage")
            if not part.streamed:
                self._move(part, "compute")

    def settle(self) -> None:
        """Everything back to storage (after a failed job: out of memory mid-move or mid-block)."""
        with self._lock:
            for key, (label, ref, whole) in list(self._streamed_in.items()):
                m = ref()
                if m is not None:
                    self._stream_out(label, m, whole)
                self._streamed_in.pop(key, None)
            for p in self._parts:
                if p.resident:
                    self._move(p, "storage")

    def _move(self, part: _Part, to: Literal["compute", "storage"]) -> None:
        module = part.module()
        if module is None:
            return
        part.resident = to == "compute"  # set first: a move that fails half-way is undone by the next
        self.moves.append(Move(part.name, to))
        self._to(module, self._compute(part.dtype) if to == "compute" else self.storage)

    def _stream_in(self, label: str, module: torch.nn.Module, whole: bool, dtype: torch.dtype) -> None:
        with self._lock:
            for other_label, ref, other_whole in list(self._streamed_in.values()):
                other = ref()
                if whole and other_whole and other is not None and other is not module:
                    self._stream_out(other_label, other, other_whole)  # left in by a failed block
            self._streamed_in[id(module)] = (label, weakref.ref(module), whole)
            self.moves.append(Move(label, "compute"))
            self._to(module, self._compute(dtype), recurse=whole)

    def _stream_out(self, label: str, module: torch.nn.Module, whole: bool) -> None:
        with self._lock:
            self._streamed_in.pop(id(module), None)
            self.moves.append(Move(label, "storage"))
            self._to(module, self.storage, recurse=whole)

    def _compute(self, dtype: torch.dtype) -> Place:
        """The compute place of a part loaded in `dtype` (its dtype restored only when storage changed it)."""
        return Place(str(self.compute), dtype if self.storage.dtype is not None else None)

    @staticmethod
    def _to(module: torch.nn.Module, place: Place, recurse: bool = True) -> None:
        """Move the module's tensors (or only its own, not its children's) to `place`, in place."""
        device = torch.device(place.device)
        modules = module.modules() if recurse else iter((module,))
        for m in modules:
            for t in list(m._parameters.values()):
                if t is not None:
                    t.data = _placed(t.data, device, place.dtype)
            for key, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[key] = _placed(b, device, place.dtype)

    def _inputs(self, value: Any) -> Any:
        """Tensors (in tuples, lists, dicts) moved to the compute device; the rest as it is."""
        if isinstance(value, torch.Tensor):
            return value if value.device == self.compute else value.to(self.compute)
        if isinstance(value, tuple):
            return tuple(self._inputs(v) for v in value)
        if isinstance(value, list):
            return [self._inputs(v) for v in value]
        if isinstance(value, dict):
            return {k: self._inputs(v) for k, v in value.items()}
        return value


def _placed(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(device=device, dtype=dtype)
    return t if t.device == device else t.to(device)
