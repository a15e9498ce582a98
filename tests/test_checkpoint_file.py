"""Bad model files: each gives a clear error naming the file, and nothing in them runs."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    ZIP_PICKLE,
    CheckpointError,
    load_state_dict,
    read_safetensors_header,
    sniff_format,
    tensor_shapes,
)


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _evil_ckpt(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, path)
    return path


def test_good_files_load_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    sd = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    st = tmp_path / "named-wrong.ckpt"
    save_file(sd, str(st))
    assert sniff_format(st) == SAFETENSORS
    assert torch.equal(load_state_dict(st)["a.weight"], sd["a.weight"])
    pt = tmp_path / "named-wrong.safetensors"
    torch.save({"state_dict": sd, "global_step": 5}, pt)
    assert sniff_format(pt) == ZIP_PICKLE
    loaded = load_state_dict(pt)
    assert list(loaded) == ["a.weight"] and torch.equal(loaded["a.weight"], sd["a.weight"])
    assert tensor_shapes(st) == {"a.weight": (2, 3)}


@pytest.mark.parametrize("name", ["evil.ckpt", "evil.safetensors", "evil.pt"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = _evil_ckpt(tmp_path / name, marker)
    with pytest.raises(CheckpointError, match="refused") as e:
        load_state_dict(path)
    assert name in str(e.value)
    assert not marker.exists()


def test_legacy_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "old.ckpt"
    path.write_bytes(pickle.dumps({"x": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="refused|corrupt"):
        load_state_dict(path)
    assert not marker.exists()


def test_text_file_renamed_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("these are my prompt notes, not a model\n" * 3)
    with pytest.raises(CheckpointError, match="bad magic bytes") as e:
        load_state_dict(path)
    assert "notes.safetensors" in str(e.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_state_dict(path)


def test_truncated_safetensors_is_an_incomplete_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file({"w": torch.ones(1000)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="incomplete file"):
        load_state_dict(path)


def test_truncated_zip_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({"w": torch.ones(10000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        load_state_dict(path)


def test_header_claiming_absurd_size_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}" + b"\0" * 16)
    with pytest.raises(CheckpointError, match="header claims"):
        read_safetensors_header(path)


def test_header_with_100k_entries_is_refused(tmp_path: Path) -> None:
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(100_000)}
    raw = json.dumps(header).encode()
    path = tmp_path / "many.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match="100000 tensors"):
        read_safetensors_header(path)


def test_header_entry_with_lying_size(tmp_path: Path) -> None:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(CheckpointError, match="inconsistent size"):
        read_safetensors_header(path)
