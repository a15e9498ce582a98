"""Scanning model folders laid out like A1111's, titles with hashes, look-ups and the hash cache."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from webui.core.config import AppConfig
from webui.core.models.hashes import HashCache
from webui.core.models.manager import ModelManager, ModelNotFound
from webui.core.models.registry import CHECKPOINT_EXTENSIONS, find, scan, with_hash


def _layout(root: Path) -> Path:
    ckpt = root / "models" / "Stable-diffusion"
    (ckpt / "sdxl" / "nested").mkdir(parents=True)
    (ckpt / "a.safetensors").write_bytes(b"aaaa")
    (ckpt / "sdxl" / "nested" / "b.ckpt").write_bytes(b"bbbb")
    (ckpt / "readme.txt").write_text("not a model")
    (ckpt / ".hidden.safetensors").write_bytes(b"x")
    diffusers_dir = ckpt / "my-diffusers"
    (diffusers_dir / "unet").mkdir(parents=True)
    (diffusers_dir / "model_index.json").write_text("{}")
    (diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"cccc")
    (root / "models" / "VAE").mkdir(parents=True)
    (root / "models" / "VAE" / "vae-ft-mse.safetensors").write_bytes(b"vvvv")
    return ckpt


def test_scan_finds_files_subfolders_and_diffusers_folders(tmp_path: Path) -> None:
    ckpt = _layout(tmp_path)
    result = scan([ckpt], CHECKPOINT_EXTENSIONS)
    assert [f.name for f in result.files] == ["a.safetensors", "my-diffusers", "sdxl/nested/b.ckpt"]
    assert [f.is_folder for f in result.files] == [False, True, False]
    assert result.files[2].model_name == "sdxl/nested/b"
    assert result.problems == ()


def test_titles_carry_short_sha256_and_lookups_work(tmp_path: Path) -> None:
    ckpt = _layout(tmp_path)
    cache = HashCache(tmp_path / "cache" / "hashes.sqlite")
    files = [with_hash(f, cache) for f in scan([ckpt], CHECKPOINT_EXTENSIONS).files]
    a = files[0]
    assert a.sha256 == hashlib.sha256(b"aaaa").hexdigest()
    assert a.title == f"a.safetensors [{a.sha256[:10]}]"
    for q in (a.title, "a.safetensors", "a", a.sha256[:10], a.sha256, "a.safetensors [0123456789]"):
        assert find(files, q) == a, q
    assert find(files, "nope") is None
    assert files[1].sha256 and len(files[1].sha256) == 64  # diffusers folder hash


def test_hash_cache_hashes_once_and_notices_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"one")
    cache = HashCache(tmp_path / "h.sqlite")
    assert cache.get(f) is None
    assert cache.hash(f) == hashlib.sha256(b"one").hexdigest()
    # the cached value is used while size and mtime are unchanged: prove it by editing the table
    with sqlite3.connect(tmp_path / "h.sqlite") as con:
        con.execute("UPDATE hashes SET sha256 = 'cached'")
    assert cache.hash(f) == "cached"
    f.write_bytes(b"two!")
    os.utime(f, ns=(1, 1))
    assert cache.hash(f) == hashlib.sha256(b"two!").hexdigest()


def test_scan_reports_missing_folder_and_keeps_going(tmp_path: Path) -> None:
    ckpt = _layout(tmp_path)
    result = scan([tmp_path / "nope", ckpt], CHECKPOINT_EXTENSIONS)
    assert len(result.files) == 3
    assert any("nope" in p and "does not exist" in p for p in result.problems)


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    ckpt = _layout(tmp_path)
    (ckpt / "loop").symlink_to(ckpt)
    assert len(scan([ckpt], CHECKPOINT_EXTENSIONS).files) == 3


def test_manager_lists_a1111_folder_and_names_valid_models(tmp_path: Path) -> None:
    _layout(tmp_path)
    m = ModelManager(AppConfig.for_data_dir(tmp_path))
    assert m.refresh() == ()
    assert [v.name for v in m.vaes()] == ["vae-ft-mse.safetensors"]
    titles = [f.title for f in m.hash_all()]
    assert titles[0].startswith("a.safetensors [")
    try:
        m.resolve("missing-model")
    except ModelNotFound as e:
        assert "missing-model" in str(e) and "a.safetensors" in str(e)
    else:
        raise AssertionError("expected ModelNotFound")


def test_no_hashing_flag_leaves_titles_bare(tmp_path: Path) -> None:
    _layout(tmp_path)
    m = ModelManager(AppConfig.for_data_dir(tmp_path, hashing=False))
    m.refresh()
    assert [f.title for f in m.hash_all()][0] == "a.safetensors"
    assert not (tmp_path / "cache" / "hashes.sqlite").exists()
