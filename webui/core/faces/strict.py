"""Building a face network from its file's tensors: made on the meta device, then every key and shape
loaded strictly (the tensors become the weights, nothing is allocated twice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def load_on_meta(make: Callable[[], M], state: dict[str, torch.Tensor], what: str) -> M:
    """`make()` built on the meta device with `state` as its weights, in eval mode; ValueError
    "not `what`: ..." with the first lines of torch's complaint when a key or shape does not fit."""
    with torch.device("meta"):
        net = make()
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        detail = " ".join(lines[:3])[:400]
        raise ValueError(f"not {what}: {detail}") from e
    return net.eval()
