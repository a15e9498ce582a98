"""Reading checkpoint files safely: format by magic bytes, bounded headers, pickles without code.

Three formats exist in the wild: safetensors (an 8-byte little-endian header length, a JSON header, raw
tensor bytes), PyTorch's zip archive (a pickle inside a zip), and the legacy raw pickle. Whatever the
extension says, the bytes decide. Pickles are only ever read with `torch.load(weights_only=True)`, which
refuses any object that is not plain tensors and containers: a checkpoint that tries to run code fails
to load and nothing in it runs.
"""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SAFETENSORS = "safetensors"
ZIP_PICKLE = "zip-pickle"
LEGACY_PICKLE = "legacy-pickle"

MAX_HEADER_BYTES = 64 * 2**20  # real SDXL headers are ~200 KB
MAX_TENSORS = 20_000  # real SDXL checkpoints hold ~2,500 tensors

_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip


class CheckpointError(Exception):
    """A model file cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason} ({self.path})")


@dataclass(frozen=True)
class TensorMeta:
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # byte range in the data section (after the header)


def sniff_format(path: Path) -> str:
    """Return SAFETENSORS, ZIP_PICKLE or LEGACY_PICKLE from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise CheckpointError(path, f"cannot read file: {e.strerror or e}") from e
    if len(head) < 9:
        raise CheckpointError(path, "file is empty or truncated (fewer than 9 bytes)")
    if head[:4] == b"PK\x03\x04":
        return ZIP_PICKLE
    if head[0] == 0x80 and head[1] in range(2, 6):
        return LEGACY_PICKLE
    if head[8:9] == b"{":
        return SAFETENSORS
    raise CheckpointError(path, "not a checkpoint: neither safetensors nor a PyTorch file (bad magic bytes)")


def read_raw_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`__metadata__`, the tensor entries) of a safetensors file's JSON header, read alone and bounded:
    the one reader of headers (the entries are checked by read_safetensors_header when tensors are to be
    loaded; listings and cards read only names, shapes and metadata). CheckpointError if corrupt."""
    _, meta, entries = _read_header(path)
    return meta, entries


def _read_header(path: Path) -> tuple[int, dict[str, Any], dict[str, Any]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(path, "file is empty or truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(
                path,
                f"safetensors header claims {n} bytes but the file has {size} bytes: corrupt or truncated",
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"safetensors header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None)
    return n, (meta if isinstance(meta, dict) else {}), header


def read_safetensors_header(path: Path) -> dict[str, TensorMeta]:
    """Read and validate a safetensors header without touching tensor data.

    Bounded work whatever the file claims: header size and tensor count are capped, and every tensor's
    byte range must lie inside the file (a truncated download fails here, before any load).
    """
    size = path.stat().st_size
    n, _, header = _read_header(path)
    if len(header) > MAX_TENSORS:
        raise CheckpointError(path, f"safetensors header lists {len(header)} tensors (limit {MAX_TENSORS})")
    data_size = size - 8 - n
    end_max = 0
    out: dict[str, TensorMeta] = {}
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            count = 1
            for d in shape:
                count *= int(d)
            ok = 0 <= start <= end and end - start == count * _DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(path, f"safetensors header entry {name!r} is malformed") from e
        if not ok:
            raise CheckpointError(path, f"safetensors header entry {name!r} has inconsistent size")
        end_max = max(end_max, end)
        out[name] = TensorMeta(dtype, tuple(int(d) for d in shape), (int(start), int(end)))
    if end_max > data_size:
        raise CheckpointError(
            path,
            f"incomplete file: tensors need {end_max} data bytes but only {data_size} are present "
            "(interrupted download?)",
        )
    return out


WRAPPERS = ("state_dict", "params_ema", "params")  # Lightning's, then BasicSR's (GFPGAN, CodeFormer, ESRGAN)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in WRAPPERS):
        obj = next(obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict))
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"file holds a {type(obj).__name__}, not a state dict of tensors")
    if obj and all(isinstance(v, dict) for v in obj.values()):
        # parts saved as nested dicts (an IP-Adapter .bin: {"image_proj": {...}, "ip_adapter": {...}})
        obj = {f"{part}.{k}": v for part, sub in obj.items() if isinstance(part, str) for k, v in sub.items()}
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
}  # fmt: skip


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor read into the process's own memory with plain reads, never memory-mapped: a file
    rewritten in place while the server runs (a re-download under the same name, `cp`) must not take
    the weights with it (SIGBUS), and each byte is held once."""
    header = read_safetensors_header(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        start = 8 + n
        out: dict[str, torch.Tensor] = {}
        for name, meta in sorted(header.items(), key=lambda item: item[1].offsets[0]):
            size = meta.offsets[1] - meta.offsets[0]
            buf = bytearray(size)
            f.seek(start + meta.offsets[0])
            if f.readinto(buf) != size:
                raise CheckpointError(
                    path, f"incomplete file: tensor {name!r} is cut short (file changed while read?)"
                )
            dtype = _TORCH_DTYPES[meta.dtype]
            t = torch.frombuffer(buf, dtype=dtype) if size else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(meta.shape)
    return out


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load every tensor of a checkpoint on the CPU, into memory of its own (see `_read_safetensors`)."""
    fmt = sniff_format(path)
    if fmt == SAFETENSORS:
        return _read_safetensors(path)
    try:
        if path.suffix.lower() == ".safetensors":
            # torch.load goes by extension and would hand this pickle to safetensors: pass a file object
            with open(path, "rb") as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            path,
            "refused: this pickle contains objects other than tensors (it could run code); nothing was "
            f"executed. Convert it to .safetensors with a tool you trust. Detail: {first}",
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(path, f"incomplete or corrupt PyTorch file: {str(e).splitlines()[0]}") from e
    return _unwrap(obj, path)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a checkpoint's tensors; header-only for safetensors."""
    if sniff_format(path) == SAFETENSORS:
        return {k: m.shape for k, m in read_safetensors_header(path).items()}
    return {k: tuple(v.shape) for k, v in load_state_dict(path).items()}
