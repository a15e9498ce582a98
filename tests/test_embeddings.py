"""Textual-inversion embeddings: every ecosystem format loads, bad files are skipped with a reason, pickles
that run code are refused without running, and the folder is rescanned only when its files change."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from webui.core.models.hashes import HashCache
from webui.core.prompts import embeddings as emb_mod
from webui.core.prompts.embeddings import (
    EmbeddingFolder,
    encoder_widths,
    load_embedding,
    load_embeddings,
    ti_hashes_text,
    write_embedding,
)


@pytest.fixture(scope="module")
def widths(tiny_files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """The real token widths of the tiny SD1 and SDXL fixtures, read from the loaded text encoders."""
    from webui.core.models.components import Precision
    from webui.core.models.loader import load_single_file

    return {arch: encoder_widths(load_single_file(tiny_files[arch], Precision())) for arch in ("sd1", "sdxl")}


def _rand(n: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, w, generator=torch.Generator().manual_seed(seed))


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious embedding."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _evil_payload(marker: Path) -> dict[str, object]:
    return {"string_to_param": {"*": _RunsCode(marker)}, "name": "evil", "step": 1}


def test_encoder_widths_of_the_tiny_models(widths: dict[str, tuple[int, ...]]) -> None:
    assert len(widths["sd1"]) == 1
    assert len(widths["sdxl"]) == 2
    assert widths["sdxl"][0] != widths["sdxl"][1]  # clip_l and clip_g differ, so order matters


def test_every_format_loads(tmp_path: Path, widths: dict[str, tuple[int, ...]]) -> None:
    (w,) = widths["sd1"]
    wl, wg = widths["sdxl"]
    a1111, diff, embp = _rand(3, w, 1), _rand(1, w, 2)[0], _rand(2, w, 3)
    other, xl = _rand(4, w, 4), {"clip_l": _rand(2, wl, 5), "clip_g": _rand(2, wg, 6)}
    folder = tmp_path / "embeddings"
    write_embedding(folder / "old.pt", a1111, step=500, sd_checkpoint="abc123", sd_checkpoint_name="v1-5")
    write_embedding(folder / "learned_embeds.bin", diff)  # diffusers: {"<learned_embeds>": (w,)}
    write_embedding(folder / "sub" / "EasyNeg.safetensors", embp)
    save_file({"some_key": other}, str(folder / "anykey.safetensors"))
    write_embedding(folder / "xl.safetensors", xl)
    write_embedding(folder / "wrongext.pt", embp, fmt="emb_params")  # safetensors bytes named .pt
    lib = load_embeddings(folder)
    assert lib.skipped == {}
    assert set(lib.loaded) == {"old", "learned_embeds", "EasyNeg", "anykey", "xl", "wrongext"}
    old = lib.loaded["old"]
    assert torch.equal(old.vectors[""], a1111)
    assert (old.step, old.sd_checkpoint, old.sd_checkpoint_name) == (500, "abc123", "v1-5")
    assert (old.vector_count, old.shape) == (3, w)
    assert torch.equal(lib.loaded["learned_embeds"].vectors[""], diff.unsqueeze(0))
    assert lib.loaded["learned_embeds"].vector_count == 1
    assert torch.equal(lib.loaded["EasyNeg"].vectors[""], embp)
    assert lib.loaded["EasyNeg"].path == folder / "sub" / "EasyNeg.safetensors"
    assert torch.equal(lib.loaded["anykey"].vectors[""], other)
    assert torch.equal(lib.loaded["wrongext"].vectors[""], embp)
    sdxl = lib.loaded["xl"]
    assert torch.equal(sdxl.vectors["clip_l"], xl["clip_l"]) and torch.equal(
        sdxl.vectors["clip_g"], xl["clip_g"]
    )
    assert (sdxl.vector_count, sdxl.shape) == (2, wl + wg)
    assert lib.get("easyneg") is lib.loaded["EasyNeg"]  # CLIP lower-cases prompts
    assert lib.get("nope") is None


def test_vectors_for_matches_the_model(tmp_path: Path, widths: dict[str, tuple[int, ...]]) -> None:
    sd1, sdxl = widths["sd1"], widths["sdxl"]
    one = _rand(2, sd1[0])
    xl = {"clip_l": _rand(3, sdxl[0], 1), "clip_g": _rand(3, sdxl[1], 2)}
    write_embedding(tmp_path / "one.safetensors", one)
    write_embedding(tmp_path / "xl.safetensors", xl)
    lib = load_embeddings(tmp_path)
    got = lib.loaded["one"].vectors_for(sd1)
    assert got is not None and len(got) == 1 and torch.equal(got[0], one)
    assert lib.loaded["one"].vectors_for(sdxl) is None
    got_xl = lib.loaded["xl"].vectors_for(sdxl)
    assert got_xl is not None and [t.shape[-1] for t in got_xl] == list(sdxl)
    assert torch.equal(got_xl[0], xl["clip_l"]) and torch.equal(got_xl[1], xl["clip_g"])
    assert lib.loaded["xl"].vectors_for(sd1) is None
    assert lib.loaded["xl"].vectors_for(tuple(reversed(sdxl))) is None
    assert lib.loaded["one"].vectors_for((sd1[0] + 1,)) is None
    assert set(lib.usable(sd1)) == {"one"} and set(lib.usable(sdxl)) == {"xl"}
    assert set(lib.unusable(sd1)) == {"xl"} and "2 text encoders" in lib.unusable(sd1)["xl"]
    listing = lib.api_listing(sdxl)
    assert listing["loaded"] == {
        "xl": {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": sum(sdxl),
            "vectors": 3,
        }
    }
    assert listing["skipped"]["one"]["shape"] == sd1[0] and listing["skipped"]["one"]["vectors"] == 2
    assert listing["failed"] == {}


def _write_evil(path: Path, marker: Path, kind: str) -> None:
    if kind == "raw-pickle":
        path.write_bytes(pickle.dumps(_evil_payload(marker), protocol=2))
    else:
        with open(path, "wb") as f:
            torch.save(_evil_payload(marker), f, _use_new_zipfile_serialization=kind == "zip")


@pytest.mark.parametrize("name", ["evil.pt", "evil.bin", "evil.safetensors"])
@pytest.mark.parametrize("kind", ["zip", "legacy-torch", "raw-pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, name: str, kind: str) -> None:
    folder, marker = tmp_path / "embeddings", tmp_path / "pwned"
    folder.mkdir()
    _write_evil(folder / name, marker, kind)
    write_embedding(folder / "good.pt", _rand(1, 8))
    lib = load_embeddings(folder)
    assert not marker.exists()
    assert "evil" not in lib.loaded and "refused" in lib.skipped["evil"]
    assert set(lib.loaded) == {"good"}
    # the control: a file written the same way does run code when loaded without the guard
    control_file, control = tmp_path / "control.pt", tmp_path / "control-ran"
    _write_evil(control_file, control, kind)
    if kind == "raw-pickle":
        pickle.loads(control_file.read_bytes())  # noqa: S301 - deliberately unsafe: proves the fixture is live
    else:
        with open(control_file, "rb") as f:
            torch.load(f, weights_only=False)
    assert control.exists()


def test_pickle_named_safetensors_is_refused_even_if_harmless(tmp_path: Path) -> None:
    with open(tmp_path / "x.safetensors", "wb") as f:
        torch.save({"string_to_param": {"*": _rand(1, 8)}}, f)
    lib = load_embeddings(tmp_path)
    assert lib.loaded == {} and "named .safetensors" in lib.skipped["x"]


def test_broken_files_are_skipped_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_embedding(tmp_path / "good.safetensors", _rand(2, 8))
    full = write_embedding(tmp_path / "full.safetensors", _rand(4, 8)).read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(full[:-10])
    pt = write_embedding(tmp_path / "fullpt.pt", _rand(4, 8)).read_bytes()
    (tmp_path / "fullpt.pt").unlink()
    (tmp_path / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (tmp_path / "garbage.bin").write_bytes(b"\x00\x01 definitely not a model file" * 4)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "full.safetensors").unlink()
    save_file({"a": _rand(1, 8), "lora_up.weight": _rand(8, 2)}, str(tmp_path / "lora.safetensors"))
    save_file({"x": torch.zeros(2, 3, 4)}, str(tmp_path / "cube.safetensors"))
    save_file({"x": torch.zeros(2, 8, dtype=torch.int32)}, str(tmp_path / "ints.safetensors"))
    save_file({"x": torch.full((1, 8), float("nan"))}, str(tmp_path / "nan.safetensors"))
    torch.save({"string_to_param": {"*": _rand(1, 8), "y": _rand(1, 8)}}, tmp_path / "two.pt")
    save_file({"clip_l": _rand(1, 8), "clip_g": _rand(2, 12)}, str(tmp_path / "uneven.safetensors"))
    monkeypatch.setattr(emb_mod, "MAX_EMBEDDING_BYTES", 3000)
    write_embedding(tmp_path / "huge.safetensors", _rand(100, 8))
    lib = load_embeddings(tmp_path)
    assert set(lib.loaded) == {"good"} and lib.loaded["good"].path == good
    reasons = lib.skipped
    assert set(reasons) == {
        "truncated", "garbage", "empty", "lora", "cube", "ints", "nan", "two", "uneven", "huge",
    }  # fmt: skip
    assert "incomplete" in reasons["truncated"] and "truncated.safetensors" in reasons["truncated"]
    assert "truncated.pt: incomplete or corrupt" in reasons["truncated"]
    assert "magic" in reasons["garbage"]
    assert "empty" in reasons["empty"]
    assert "LoRA" in reasons["lora"]
    assert "shape (2, 3, 4)" in reasons["cube"]
    assert "int32" in reasons["ints"]
    assert "NaN" in reasons["nan"]
    assert "exactly one term" in reasons["two"]
    assert "clip_g has 2" in reasons["uneven"]
    assert "too large" in reasons["huge"]
    assert load_embeddings(tmp_path / "does-not-exist").loaded == {}


def test_truncated_pytorch_file_reason(tmp_path: Path) -> None:
    pt = write_embedding(tmp_path / "e.pt", _rand(4, 8)).read_bytes()
    (tmp_path / "e.pt").write_bytes(pt[: len(pt) // 2])
    lib = load_embeddings(tmp_path)
    assert lib.loaded == {} and "corrupt" in lib.skipped["e"]


def test_hash_is_the_file_sha256(tmp_path: Path) -> None:
    p = write_embedding(tmp_path / "emb" / "e.pt", _rand(2, 8))
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    assert load_embedding(p).shorthash == digest[:12]
    cache = HashCache(tmp_path / "cache" / "hashes.sqlite")
    assert cache.get(p) is None
    lib = load_embeddings(tmp_path / "emb", cache)
    assert lib.loaded["e"].shorthash == digest[:12]
    assert cache.get(p) == digest  # stored for next time
    assert ti_hashes_text(lib.loaded.values()) == f"e: {digest[:12]}"


def test_ti_hashes_text_drops_separators() -> None:
    e = emb_mod.Embedding("a:b,c", Path("x"), {"": torch.zeros(1, 2)}, "0123456789ab")
    assert ti_hashes_text([e, e]) == "abc: 0123456789ab"
    assert ti_hashes_text([]) is None


def test_name_collisions_first_sorted_path_wins(tmp_path: Path) -> None:
    write_embedding(tmp_path / "x.safetensors", _rand(1, 8, 1))
    write_embedding(tmp_path / "b" / "X.pt", _rand(1, 8, 2))
    first = write_embedding(tmp_path / "a" / "x.pt", _rand(1, 8, 3))
    lib = load_embeddings(tmp_path)
    assert set(lib.loaded) == {"x"} and lib.loaded["x"].path == first
    assert "same name as a/x.pt" in lib.skipped["x"] and "x.safetensors" in lib.skipped["x"]
    assert "b/X.pt" in lib.skipped["X"]


def test_hidden_files_are_ignored(tmp_path: Path) -> None:
    write_embedding(tmp_path / "real.pt", _rand(1, 8))
    (tmp_path / "._real.pt").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    assert set(load_embeddings(tmp_path).loaded) == {"real"} and load_embeddings(tmp_path).skipped == {}


def test_rescan_only_when_files_change(tmp_path: Path) -> None:
    folder = EmbeddingFolder(tmp_path / "embeddings")
    assert folder.library().loaded == {}
    write_embedding(tmp_path / "embeddings" / "a.pt", _rand(1, 8))
    lib1 = folder.library()
    assert set(lib1.loaded) == {"a"}
    assert folder.library() is lib1  # unchanged: the same object, nothing re-read
    b = write_embedding(tmp_path / "embeddings" / "sub" / "b.safetensors", _rand(2, 8))
    lib2 = folder.library()
    assert set(lib2.loaded) == {"a", "b"}
    assert lib2.loaded["a"] is lib1.loaded["a"]  # the unchanged file was not read again
    write_embedding(b, _rand(5, 8))
    os.utime(b, ns=(1, 1))  # a different mtime even on coarse clocks
    lib3 = folder.library()
    assert lib3.loaded["b"].vector_count == 5
    (tmp_path / "embeddings" / "a.pt").unlink()
    assert set(folder.library().loaded) == {"b"}


def test_library_is_thread_safe(tmp_path: Path) -> None:
    for i in range(6):
        write_embedding(tmp_path / f"e{i}.pt", _rand(1, 8, i))
    folder = EmbeddingFolder(tmp_path)
    results: list[object] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(folder.library())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert len(folder.library().loaded) == 6


def test_write_embedding_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedding format"):
        write_embedding(tmp_path / "a.pt", _rand(1, 8), fmt="ckpt")
    with pytest.raises(ValueError, match="sdxl"):
        write_embedding(tmp_path / "a.safetensors", _rand(1, 8), fmt="sdxl")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 6),
    w=st.integers(1, 24),
    fmt=st.sampled_from([("a1111", ".pt"), ("diffusers", ".bin"), ("emb_params", ".safetensors")]),
    half=st.booleans(),
)
def test_round_trip_any_shape(n: int, w: int, fmt: tuple[str, str], half: bool) -> None:
    vec = _rand(n, w).to(torch.float16 if half else torch.float32)
    with tempfile.TemporaryDirectory() as d:
        e = load_embedding(write_embedding(Path(d) / f"t{fmt[1]}", vec, fmt[0]))
    assert e.vectors[""].dtype == torch.float32
    assert torch.equal(e.vectors[""], vec.float()) and e.widths == (w,) and e.vector_count == n
