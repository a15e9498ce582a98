"""Textual-inversion embeddings: the files in `embeddings/`, read safely, and which ones fit a model.

An embedding is a few learned token vectors that stand in for a word: writing the file's name in a
prompt (`EasyNegative`) puts its vectors where that word's tokens would be. Files come in the formats
of the A1111 ecosystem:

- A1111 `.pt`/`.bin`: `{"string_to_param": {"*": (n, w)}, "name", "step", "sd_checkpoint", ...}`;
- diffusers `.bin`: `{"<token>": (w,) or (n, w)}`;
- `.safetensors`: `{"emb_params": (n, w)}` or one tensor under any key;
- SDXL: `{"clip_l": (n, 768), "clip_g": (n, 1280)}`, one set of vectors per text encoder.

The bytes decide the format, not the name, and pickles are read only with `torch.load(weights_only=True)`:
an embedding that tries to run code is refused and nothing in it runs. A file that cannot be used is
listed in `skipped` with the reason; it never stops the others from loading.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    CheckpointError,
    read_safetensors_header,
    sniff_format,
)
from webui.core.models.hashes import HashCache
from webui.core.models.registry import ModelFile, scan

EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
MAX_EMBEDDING_BYTES = 32 * 2**20  # a 75-vector SDXL embedding in fp32 is ~0.6 MB
SDXL_KEYS = ("clip_l", "clip_g")  # in text-encoder order


class EmbeddingError(Exception):
    """One embedding file cannot be used; `reason` says why."""


@dataclass(frozen=True)
class Embedding:
    name: str  # file stem: the word users write in prompts
    path: Path
    vectors: dict[str, torch.Tensor] = field(repr=False)  # {"": (n, w)}, or {"clip_l": ..., "clip_g": ...}
    shorthash: str  # A1111's TI hash: first 12 hex digits of the file's sha256
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def vector_count(self) -> int:
        """How many tokens the embedding takes in a prompt."""
        key = "clip_g" if "clip_g" in self.vectors else next(iter(self.vectors))
        return int(self.vectors[key].shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        """Token width per text encoder: (w,) for one encoder, (clip_l, clip_g) for SDXL."""
        keys = SDXL_KEYS if "clip_l" in self.vectors else ("",)
        return tuple(int(self.vectors[k].shape[-1]) for k in keys)

    @property
    def shape(self) -> int:
        """A1111's `shape`: the sum of the token widths (768 for SD1, 2048 for SDXL)."""
        return sum(self.widths)

    def vectors_for(self, widths: Sequence[int]) -> list[torch.Tensor] | None:
        """One (n, w) tensor per text encoder of a model whose encoders have these token widths (SD1/SD2:
        one width; SDXL: two, first clip_l then clip_g), or None when this embedding does not fit that
        model (wrong width or wrong number of encoders: an SD1 embedding on an SDXL model -> None)."""
        if tuple(int(w) for w in widths) != self.widths:
            return None
        keys = SDXL_KEYS if "clip_l" in self.vectors else ("",)
        return [self.vectors[k] for k in keys]

    def mismatch(self, widths: Sequence[int]) -> str | None:
        """Why this embedding does not fit a model with these encoder widths, or None when it does."""
        want = tuple(int(w) for w in widths)
        if want == self.widths:
            return None
        return f"made for {_describe(self.widths)}; this model has {_describe(want)}"


def _describe(widths: tuple[int, ...]) -> str:
    if len(widths) == 1:
        return f"one text encoder of width {widths[0]}"
    return f"{len(widths)} text encoders of widths {' + '.join(str(w) for w in widths)}"


@dataclass(frozen=True)
class EmbeddingLibrary:
    """The embeddings of one folder at one moment: what loaded, and what did not and why."""

    loaded: dict[str, Embedding] = field(default_factory=dict)  # by name
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason (unreadable, unsafe, bad shape...)
    problems: tuple[str, ...] = ()  # folder-level trouble (unreadable folder, a file that cannot be stat'ed)

    def get(self, name: str) -> Embedding | None:
        """By exact name, else ignoring case (CLIP lower-cases prompts, so case cannot tell names apart)."""
        if name in self.loaded:
            return self.loaded[name]
        folded = name.casefold()
        return next((e for n, e in self.loaded.items() if n.casefold() == folded), None)

    def usable(self, widths: Sequence[int]) -> dict[str, Embedding]:
        """The embeddings that fit a model with these text-encoder widths."""
        return {n: e for n, e in self.loaded.items() if e.mismatch(widths) is None}

    def unusable(self, widths: Sequence[int]) -> dict[str, str]:
        """Loaded embeddings that do not fit a model with these widths: name -> reason."""
        out = {}
        for name, emb in self.loaded.items():
            reason = emb.mismatch(widths)
            if reason is not None:
                out[name] = reason
        return out

    def api_listing(self, widths: Sequence[int]) -> dict[str, Any]:
        """The `/sdapi/v1/embeddings` answer for a model with these widths.

        As A1111: `loaded` fit the model, `skipped` were read but do not fit it, each as
        {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}. Sfumato adds `failed`:
        files that could not be read at all, name -> reason.
        """

        def info(e: Embedding) -> dict[str, Any]:
            return {
                "step": e.step,
                "sd_checkpoint": e.sd_checkpoint,
                "sd_checkpoint_name": e.sd_checkpoint_name,
                "shape": e.shape,
                "vectors": e.vector_count,
            }

        fits = self.usable(widths)
        return {
            "loaded": {n: info(e) for n, e in fits.items()},
            "skipped": {n: info(e) for n, e in self.loaded.items() if n not in fits},
            "failed": dict(self.skipped),
        }


def ti_hashes_text(embeddings: Iterable[Embedding]) -> str | None:
    """The infotext `TI hashes` value, A1111's way: "name: shorthash, ..." (None when there are none)."""
    parts: dict[str, str] = {}
    for e in embeddings:
        name = e.name.replace(":", "").replace(",", "")
        if e.shorthash and name not in parts:
            parts[name] = f"{name}: {e.shorthash}"
    return ", ".join(parts.values()) or None


def encoder_widths(components: Any) -> tuple[int, ...]:
    """Token widths of a loaded model's text encoders, in order (the `widths` the methods above take)."""
    out = []
    for te in (components.text_encoder, components.text_encoder_2):
        if te is not None:
            out.append(int(te.get_input_embeddings().weight.shape[-1]))
    return tuple(out)


# ---- reading one file -------------------------------------------------------------------------------


def _matrix(value: Any, what: str) -> torch.Tensor:
    """A float32 (n, w) copy of a 1-D or 2-D tensor, checked."""
    if not isinstance(value, torch.Tensor):
        raise EmbeddingError(f"{what} is a {type(value).__name__}, not a tensor")
    t = value.detach()
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise EmbeddingError(f"{what} has shape {tuple(value.shape)}; expected (vectors, width)")
    if not t.is_floating_point():
        raise EmbeddingError(f"{what} holds {t.dtype} values, not floating point")
    t = t.to(torch.float32).contiguous().clone()
    if not bool(torch.isfinite(t).all()):
        raise EmbeddingError(f"{what} contains NaN or infinite values")
    return t


def _vectors(data: Any) -> dict[str, torch.Tensor]:
    """Pick the vectors out of a loaded file, in A1111's order of formats."""
    if not isinstance(data, dict):
        raise EmbeddingError(f"file holds a {type(data).__name__}, not a dict of tensors")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else type(params).__name__
            raise EmbeddingError(f"string_to_param must hold exactly one term, found {count}")
        return {"": _matrix(next(iter(params.values())), "string_to_param")}
    if all(k in data for k in SDXL_KEYS):
        out = {k: _matrix(data[k], k) for k in SDXL_KEYS}
        if out["clip_l"].shape[0] != out["clip_g"].shape[0]:
            raise EmbeddingError(
                f"clip_l has {out['clip_l'].shape[0]} vectors but clip_g has {out['clip_g'].shape[0]}"
            )
        return out
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:
        key, value = next(iter(tensors.items()))
        return {"": _matrix(value, repr(key))}
    if not tensors:
        raise EmbeddingError("no tensors: neither a textual inversion embedding nor a diffusers concept")
    names = ", ".join(sorted(str(k) for k in tensors)[:5]) + (", ..." if len(tensors) > 5 else "")
    hint = " (looks like a LoRA: put it in models/Lora)" if any("lora" in str(k) for k in tensors) else ""
    raise EmbeddingError(f"holds {len(tensors)} tensors ({names}), not one embedding{hint}")


def _detail(e: Exception, prefer: str = "") -> str:
    """The telling line of a torch error: the one mentioning `prefer`, else the first sentence."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    line = next((ln for ln in lines if prefer and prefer in ln), lines[0])
    return line.split(". ")[0].rstrip(".")


def _torch_load(raw: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise EmbeddingError(
            "refused: this pickle contains objects other than tensors (it could run code); nothing was "
            f"executed ({_detail(e, 'GLOBAL')}). Convert it to .safetensors with a tool you trust."
        ) from e
    except Exception as e:  # torch raises many types for a damaged archive
        raise EmbeddingError(f"incomplete or corrupt PyTorch file: {_detail(e)}") from e


def _read(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and its decoded content (a dict of tensors, maybe nested)."""
    size = path.stat().st_size
    if size == 0:
        raise EmbeddingError("empty file (an unfinished download?)")
    if size > MAX_EMBEDDING_BYTES:
        raise EmbeddingError(
            f"{size / 2**20:.0f} MB is too large for an embedding: "
            "is it a LoRA or checkpoint in the wrong folder?"
        )
    fmt = sniff_format(path)
    if fmt == SAFETENSORS:
        read_safetensors_header(path)
    elif path.suffix.lower() == ".safetensors":
        raise EmbeddingError("refused: a pickle named .safetensors (the bytes are not safetensors)")
    raw = path.read_bytes()
    if fmt != SAFETENSORS:
        return raw, _torch_load(raw)
    from safetensors.torch import load

    try:
        return raw, load(raw)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise EmbeddingError(f"cannot read safetensors data: {e}") from e


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def load_embedding(path: Path, hash_cache: HashCache | None = None) -> Embedding:
    """Read one embedding file; raise EmbeddingError (with the reason) when it cannot be used."""
    try:
        raw, data = _read(path)
    except CheckpointError as e:
        reason = e.reason
        if reason.startswith("not a checkpoint"):
            reason = "not an embedding: neither safetensors nor a PyTorch file (bad magic bytes)"
        raise EmbeddingError(reason) from e
    except OSError as e:
        raise EmbeddingError(f"cannot read file: {e.strerror or e}") from e
    vectors = _vectors(data)
    digest = hash_cache.hash(path) if hash_cache is not None else hashlib.sha256(raw).hexdigest()
    meta = data if isinstance(data, dict) else {}
    return Embedding(
        name=path.stem,
        path=path,
        vectors=vectors,
        shorthash=digest[:12],
        step=_int_or_none(meta.get("step")),
        sd_checkpoint=_str_or_none(meta.get("sd_checkpoint")),
        sd_checkpoint_name=_str_or_none(meta.get("sd_checkpoint_name")),
    )


# ---- a folder of them -------------------------------------------------------------------------------

_Loaded = Embedding | str  # an embedding, or the reason its file was skipped


def _assemble(results: Sequence[tuple[ModelFile, _Loaded]], problems: tuple[str, ...]) -> EmbeddingLibrary:
    """Name collisions (ignoring case): the first file by relative path wins, the others are skipped."""
    loaded: dict[str, Embedding] = {}
    owner: dict[str, str] = {}  # casefolded name -> relative path of the winner
    skipped: dict[str, list[str]] = {}
    for item, result in sorted(results, key=lambda r: r[0].name):
        name = item.path.stem
        if isinstance(result, str):
            skipped.setdefault(name, []).append(f"{item.name}: {result}")
        elif name.casefold() in owner:
            skipped.setdefault(name, []).append(
                f"{item.name}: same name as {owner[name.casefold()]}, which is used instead"
            )
        else:
            loaded[name] = result
            owner[name.casefold()] = item.name
    return EmbeddingLibrary(loaded, {n: "; ".join(r) for n, r in skipped.items()}, problems)


class EmbeddingFolder:
    """An embeddings folder, re-read only when its files (names, sizes, mtimes) change; thread-safe.

    `library()` returns the same object until something changes, so callers may cache by identity.
    Only changed files are read again on a rescan.
    """

    def __init__(self, folder: Path, hash_cache: HashCache | None = None) -> None:
        self.folder = Path(folder)
        self.hash_cache = hash_cache
        self._lock = threading.Lock()
        self._files: dict[Path, tuple[int, int, _Loaded]] = {}
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._library = EmbeddingLibrary()

    def _load(self, item: ModelFile) -> _Loaded:
        try:
            return load_embedding(item.path, self.hash_cache)
        except EmbeddingError as e:
            return str(e)
        except Exception as e:  # one odd file must not stop the others (the reason is kept)
            return f"unexpected error: {type(e).__name__}: {e}"

    def library(self) -> EmbeddingLibrary:
        with self._lock:
            listing: tuple[ModelFile, ...] = ()
            problems: tuple[str, ...] = ()
            if self.folder.exists():
                result = scan([self.folder], EMBEDDING_EXTENSIONS, folders=False)
                listing, problems = result.files, result.problems
            signature = tuple(sorted((f.name, f.size, f.mtime_ns) for f in listing))
            if signature == self._signature:
                return self._library
            files: dict[Path, tuple[int, int, _Loaded]] = {}
            results = []
            for item in listing:
                old = self._files.get(item.path)
                if old is not None and old[:2] == (item.size, item.mtime_ns):
                    loaded = old[2]
                else:
                    loaded = self._load(item)
                files[item.path] = (item.size, item.mtime_ns, loaded)
                results.append((item, loaded))
            self._files, self._signature = files, signature
            self._library = _assemble(results, problems)
            return self._library


def load_embeddings(folder: Path, hash_cache: HashCache | None = None) -> EmbeddingLibrary:
    """Read every embedding under `folder` (subfolders too) once."""
    return EmbeddingFolder(folder, hash_cache).library()


# ---- writing (test fixtures, tools) ------------------------------------------------------------------

EMBEDDING_FORMATS = ("auto", "a1111", "diffusers", "emb_params", "sdxl")


def write_embedding(
    path: Path,
    vectors: torch.Tensor | Mapping[str, torch.Tensor],
    fmt: str = "auto",
    *,
    step: int | None = None,
    sd_checkpoint: str | None = None,
    sd_checkpoint_name: str | None = None,
) -> Path:
    """Write an embedding file atomically in one of the ecosystem's formats.

    fmt: "a1111" (.pt pickle with string_to_param), "diffusers" ({"<name>": tensor} pickle), "emb_params"
    (safetensors), "sdxl" (safetensors with clip_l and clip_g; `vectors` is that mapping) or "auto":
    sdxl for a mapping, emb_params for .safetensors, diffusers for .bin, a1111 otherwise.
    """
    path = Path(path)
    if fmt not in EMBEDDING_FORMATS:
        raise ValueError(f"unknown embedding format {fmt!r}; choose one of {', '.join(EMBEDDING_FORMATS)}")
    if fmt == "auto":
        by_suffix = {".safetensors": "emb_params", ".bin": "diffusers"}
        fmt = "sdxl" if isinstance(vectors, Mapping) else by_suffix.get(path.suffix.lower(), "a1111")
    if (fmt == "sdxl") != isinstance(vectors, Mapping):
        raise ValueError("the sdxl format takes {'clip_l': ..., 'clip_g': ...}; the others take one tensor")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(vectors, Mapping) or fmt == "emb_params":
            from safetensors.torch import save_file

            named = vectors if isinstance(vectors, Mapping) else {"emb_params": vectors}
            save_file({k: v.detach().contiguous() for k, v in named.items()}, str(tmp))
        elif fmt == "diffusers":
            torch.save({f"<{path.stem}>": vectors.detach()}, tmp)
        else:
            data: dict[str, Any] = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors.detach()}}
            data |= {"name": path.stem, "step": step, "sd_checkpoint": sd_checkpoint}
            torch.save(data | {"sd_checkpoint_name": sd_checkpoint_name}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
