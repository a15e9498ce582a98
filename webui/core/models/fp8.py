"""fp8 weights kept as fp8 in memory, upcast one layer at a time when it runs.

A Flux transformer saved in `float8_e4m3fn` is 12 GB; upcast at load it would be 24 GB (bf16) or 48 GB
(fp32). `Fp8Linear` keeps its weight in the file's fp8 and computes `linear(x, W.to(x.dtype), b)`: the
upcast copy exists for that one call only. This works on every device (CPU, GPUs without fp8 matrix
units); no fp8 matrix multiply is used.

Only the Linear layers inside the transformer blocks stay fp8 (nearly all of the weights); embedders,
norms, the output layer and biases are upcast at load, so the model's first parameter (what
`Components.dtype` reads) has the compute dtype.

A network (LoRA) on an fp8 layer is not written into the fp8 weight, where it would be rounded away:
`weight_delta` holds it in the compute dtype and is added after the upcast, for the job only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_fp8(t: Tensor) -> bool:
    return t.dtype in FP8_DTYPES


class Fp8Linear(torch.nn.Linear):
    """A Linear layer whose weight stays fp8; same parameter names as `nn.Linear`."""

    weight_delta: Tensor | None = None  # a network's change to the weight, compute dtype (see apply)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.to(x.dtype)
        if self.weight_delta is not None:
            weight = weight + self.weight_delta.to(weight.device, x.dtype)  # (offloaded: it may wait in RAM)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, weight, bias)


def keep_fp8(name: str, tensor: Tensor, prefixes: Iterable[str]) -> bool:
    """Whether a diffusers tensor stays fp8: a 2-D weight under one of the block prefixes."""
    return (
        is_fp8(tensor) and tensor.ndim == 2 and name.endswith(".weight") and name.startswith(tuple(prefixes))
    )


def fp8_linears(module: torch.nn.Module) -> int:
    """Swap every `nn.Linear` holding an fp8 weight for an `Fp8Linear` sharing its parameters (in place);
    returns how many. Other fp8 tensors are left as they are (upcast them before)."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and is_fp8(child.weight):
                new = Fp8Linear(child.in_features, child.out_features, child.bias is not None, device="meta")
                new.weight = child.weight
                new.bias = child.bias
                new.train(child.training)
                setattr(parent, name, new)
                swapped += 1
    return swapped


def upcast_other_fp8(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Upcast every fp8 parameter not held by an `Fp8Linear` (a layer that could not compute in fp8)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, Fp8Linear):
                continue
            for p in m.parameters(recurse=False):
                if is_fp8(p):
                    p.data = p.data.to(dtype)


def has_fp8(module: torch.nn.Module) -> bool:
    return any(is_fp8(p) for p in module.parameters())


def to_keeping_fp8(module: torch.nn.Module, device: str | torch.device, dtype: torch.dtype) -> None:
    """`module.to(device, dtype)` that leaves fp8 tensors fp8 (they only move)."""

    def convert(t: Tensor) -> Tensor:
        if is_fp8(t) or not t.is_floating_point():
            return t.to(device=device)
        return t.to(device=device, dtype=dtype)

    with torch.no_grad():
        for m in module.modules():
            for p in m.parameters(recurse=False):
                p.data = convert(p.data)
            for name, b in list(m.named_buffers(recurse=False)):
                setattr(m, name, convert(b))
