"""LoRA discovery: folders and subfolders, header-only metadata, sidecars, A1111 hashes (cached)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.core.networks.hashes import LoraHashCache, lora_sha256
from webui.core.networks.registry import LoraLibrary, base_model, read_metadata, scan_loras
from webui.core.networks.tiny import write_header_only


def _lora(path: Path, seed: int = 0, **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    sd = {
        "lora_unet_x.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_x.lora_up.weight": torch.randn(8, 2, generator=g),
    }
    save_file(sd, str(path), metadata=metadata or None)
    return path


def _a1111_hash(path: Path) -> str:
    """A1111's definition, written out independently: sha256 of the bytes after the 8 + n header."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n :]).hexdigest()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    lora, lyco = tmp_path / "models" / "Lora", tmp_path / "models" / "LyCORIS"
    _lora(lora / "ink.safetensors", ss_output_name="InkStyle", ss_base_model_version="sd_v1")
    (lora / "ink.preview.png").write_bytes(b"png")
    (lora / "ink.json").write_text(json.dumps({"activation text": "ink", "preferred weight": 0.7}))
    _lora(lora / "chars" / "Hero.safetensors", seed=1)
    (lora / "chars" / "Hero.jpg").write_bytes(b"jpg")
    _lora(lora / ".hidden" / "secret.safetensors", seed=2)
    (lora / "notes.txt").write_text("not a network")
    torch.save({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, lora / "old.pt")
    _lora(lyco / "sub" / "deep" / "loha.safetensors", seed=3, ss_output_name="my:loha")
    return lora, lyco


def test_scan_lists_both_folders_subfolders_and_sidecars(folders: tuple[Path, Path]) -> None:
    lora, lyco = folders
    scan = scan_loras([lora, lyco, lora.parent / "missing"])
    by_name = {f.name: f for f in scan.files}
    assert [f.relative for f in scan.files] == ["ink", "old", "chars/Hero", "sub/deep/loha"]
    assert by_name["ink"].preview == lora / "ink.preview.png" and by_name["ink"].sidecar == lora / "ink.json"
    assert by_name["Hero"].preview == lora / "chars" / "Hero.jpg" and by_name["Hero"].sidecar is None
    assert by_name["loha"].path == lyco / "sub" / "deep" / "loha.safetensors"
    assert by_name["ink"].size == (lora / "ink.safetensors").stat().st_size
    assert scan.problems == ()  # a missing LyCORIS-style folder is normal


def test_metadata_sidecar_alias_and_base_model(folders: tuple[Path, Path], tmp_path: Path) -> None:
    lib = LoraLibrary(folders, tmp_path / "cache" / "hashes.sqlite")
    ink = lib.find("ink")
    assert ink is not None
    meta = lib.metadata(ink)
    assert meta["ss_output_name"] == "InkStyle" and base_model(meta) == "sd1"
    assert lib.alias(ink) == "InkStyle"
    assert lib.user_metadata(ink) == {"activation text": "ink", "preferred weight": 0.7}
    hero = lib.find("Hero")
    assert hero is not None and lib.alias(hero) == "Hero" and lib.metadata(hero) == {}
    assert base_model({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}) == "sdxl"
    assert base_model({"ss_base_model_version": "sd_v2", "ss_v2": "True"}) == "sd2"
    assert base_model({}) is None


def test_find_by_name_path_alias_ignoring_case(folders: tuple[Path, Path], tmp_path: Path) -> None:
    lib = LoraLibrary(folders, tmp_path / "h.sqlite")
    hero = lib.find("Hero")
    assert hero is not None and hero.name == "Hero"
    assert lib.find("hero") == hero and lib.find("chars/Hero") == hero and lib.find("CHARS/hero") == hero
    assert lib.find("InkStyle") == lib.find("ink") == lib.find("inkstyle")
    assert lib.find("my:loha") == lib.find("loha")
    assert lib.find("secret") is None  # hidden folders are not listed
    assert lib.find("nope") is None


def test_metadata_json_values_are_decoded_and_header_only(tmp_path: Path) -> None:
    freq = {"5_ink": {"ink": 3, "sketch": 1}}
    header = {"ss_tag_frequency": json.dumps(freq), "bad": "{not json"}
    path = write_header_only(tmp_path / "h.safetensors", header, claimed_tensors=3)
    meta = read_metadata(path)
    assert meta == {"ss_tag_frequency": freq, "bad": "{not json"}
    assert read_metadata(tmp_path / "absent.pt") == {}  # only safetensors carry metadata: not even opened
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(Exception, match="header claims"):
        read_metadata(broken)
    lib = LoraLibrary([tmp_path], tmp_path / "h.sqlite")
    item = lib.find("broken")
    assert item is not None and lib.metadata(item) == {}  # listed, unreadable metadata is empty


def test_hash_matches_a1111_definition_and_is_cached(folders: tuple[Path, Path], tmp_path: Path) -> None:
    lib = LoraLibrary(folders, tmp_path / "cache" / "hashes.sqlite")
    ink = lib.find("ink")
    old = lib.find("old")
    assert ink is not None and old is not None
    assert lib.hash(ink) == _a1111_hash(ink.path) == lora_sha256(ink.path)
    assert lib.shorthash(ink) == _a1111_hash(ink.path)[:12]
    assert lib.hash(old) == hashlib.sha256(old.path.read_bytes()).hexdigest()  # not safetensors: whole file
    # metadata is not hashed: the same tensors with other metadata hash the same
    twin = _lora(tmp_path / "twin.safetensors", ss_output_name="something else entirely")
    assert lora_sha256(twin) == lib.hash(ink)
    # cached by (path, size, mtime): a same-size rewrite with the old mtime keeps the recorded hash
    st = ink.path.stat()
    recorded = lib.hash(ink)
    assert recorded is not None
    _lora(ink.path, seed=9, ss_output_name="InkStyle", ss_base_model_version="sd_v1")
    os.utime(ink.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ink.path.stat().st_size == st.st_size and lib.hash(ink) == recorded != _a1111_hash(ink.path)
    assert LoraHashCache(tmp_path / "cache" / "hashes.sqlite").get(ink.path) == recorded
    assert lib.find_by_shorthash(recorded[:12]) == ink and lib.find_by_shorthash("0" * 12) is None


def test_recorded_sshs_hash_wins_and_hashing_can_be_off(tmp_path: Path) -> None:
    digest = "AB" * 32
    _lora(tmp_path / "Lora" / "k.safetensors", sshs_model_hash=digest)
    lib = LoraLibrary([tmp_path / "Lora"], tmp_path / "h.sqlite")
    item = lib.find("k")
    assert item is not None and lib.hash(item) == digest.lower()
    off = LoraLibrary([tmp_path / "Lora"], tmp_path / "h2.sqlite", hashing=False)
    assert off.shorthash(item) is None and not (tmp_path / "h2.sqlite").exists()


def test_refresh_sees_new_and_removed_files(tmp_path: Path) -> None:
    root = tmp_path / "Lora"
    _lora(root / "a.safetensors")
    lib = LoraLibrary([root], tmp_path / "h.sqlite")
    assert [f.name for f in lib.items()] == ["a"]
    _lora(root / "b.safetensors", seed=1)
    assert lib.find("b") is None  # listed on refresh, not on every look-up
    assert lib.refresh() == () and lib.find("b") is not None
    (root / "a.safetensors").unlink()
    lib.refresh()
    assert [f.name for f in lib.items()] == ["b"]


def test_ten_thousand_header_only_files_list_without_reading_tensors(tmp_path: Path) -> None:
    """Every file's header claims 1 MiB tensors that are not there: reading any tensor would fail."""
    root = tmp_path / "Lora"
    for i in range(10_000):
        write_header_only(root / f"d{i % 20}" / f"net{i:05d}.safetensors", {"ss_output_name": f"alias{i}"})
    lib = LoraLibrary([root], tmp_path / "h.sqlite")
    items = lib.items()
    assert len(items) == 10_000 and lib.problems == ()
    assert all(f.size < 400 for f in items)  # header only: the listing saw them as they are
    assert lib.find("net00042") is not None
    hit = lib.find("alias9999")  # an alias look-up reads every header once, still no tensors
    assert hit is not None and hit.name == "net09999"
    assert not (tmp_path / "h.sqlite").exists()  # nothing was hashed
