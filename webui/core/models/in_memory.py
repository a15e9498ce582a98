"""Weights in the process's own memory, not mapped from the file they were read from.

safetensors and torch.load(mmap=True) hand out tensors backed by a memory map of the file. Were those
kept, overwriting the file in place (`cp new.safetensors model.safetensors`, a re-download under the
same name) would kill the server with SIGBUS at the next touch of a page past the new end. So every CPU
tensor a loaded model keeps gets its own copy, one tensor at a time (the peak is one tensor more than
the model); weights moved to a GPU are copies already.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch


@torch.no_grad()
def copy_into_memory(modules: Iterable[torch.nn.Module]) -> None:
    for module in modules:
        for t in itertools.chain(module.parameters(), module.buffers()):
            if t.device.type == "cpu":
                t.data = t.data.clone()
