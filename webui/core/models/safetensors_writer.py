"""Write a .safetensors file one tensor at a time, atomically.

The header (names, dtypes, shapes, byte offsets and string metadata) is known before any tensor is
computed, so it is written first and each tensor's bytes follow as `produce(name)` returns them: a
merge of two 7 GB checkpoints holds one tensor at a time, not a copy of the model. The file is written
under a temporary name in the target folder and renamed into place only when complete; a failure or a
cancel (an exception from `produce`) leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Planned:
    """One tensor of the file to write."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * torch.empty((), dtype=self.dtype).element_size()


def header_bytes(plan: Sequence[Planned], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header, padded with spaces to a multiple of 8 bytes."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for item in plan:
        if item.dtype not in DTYPE_NAMES:
            raise ValueError(f"{item.name}: dtype {item.dtype} cannot be stored in safetensors")
        header[item.name] = {
            "dtype": DTYPE_NAMES[item.dtype],
            "shape": list(item.shape),
            "data_offsets": [offset, offset + item.nbytes],
        }
        offset += item.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_streaming(
    path: Path,
    plan: Sequence[Planned],
    produce: Callable[[Planned], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `path` from `plan`, asking `produce` for each tensor in order (it must match the plan)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header_bytes(plan, metadata or {}))
            for item in plan:
                tensor = produce(item)
                if tensor.dtype != item.dtype or tuple(tensor.shape) != item.shape:
                    raise ValueError(
                        f"{item.name}: produced {tensor.dtype} {tuple(tensor.shape)}, "
                        f"planned {item.dtype} {item.shape}"
                    )
                data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                fh.write(data.numpy().tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
