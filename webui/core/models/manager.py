"""The model manager: the user's model files, loaded on request, cached, pinned while in use.

There is no "current model". Each job names the checkpoint (and VAE) it wants and holds it for the
duration of a `with manager.acquire(...)` block; two jobs on different checkpoints each get their own.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.core import families
from webui.core.config import AppConfig
from webui.core.models import configs
from webui.core.models.cache import ModelCache
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict
from webui.core.models.components import Components, Precision, vae_compute_dtype, wants_channels_last
from webui.core.models.family_probe import family_of_path
from webui.core.models.hashes import HashCache
from webui.core.models.infer import ShapeError, vae_config
from webui.core.models.loader import load_model
from webui.core.models.offload import Offloader
from webui.core.models.registry import (
    CHECKPOINT_EXTENSIONS,
    TEXT_ENCODER_EXTENSIONS,
    VAE_EXTENSIONS,
    ModelFile,
    ScanResult,
    find,
    scan,
    with_hash,
)


class ModelNotFound(LookupError):
    """No model file matches the name; the message lists the valid names."""

    def __init__(self, kind: str, query: str, valid: list[str], message: str | None = None) -> None:
        shown = ", ".join(valid[:20]) + (f", ... ({len(valid)} in all)" if len(valid) > 20 else "")
        super().__init__(message or f"{kind} {query!r} not found; available: {shown or 'none'}")
        self.kind, self.query, self.valid = kind, query, valid


@dataclass(frozen=True)
class LoadedModel:
    file: ModelFile
    components: Components
    vae_file: ModelFile | None = None
    notes: tuple[str, ...] = ()  # what the user should know (a default checkpoint that was passed over)


def load_vae_file(path: Path, arch: str, precision: Precision) -> Any:
    """A standalone VAE (LDM layout with or without `first_stage_model.`, or diffusers layout)."""
    import torch
    from diffusers import AutoencoderKL

    sd = load_state_dict(path)
    if not any(k.startswith("first_stage_model.") for k in sd):
        sd = {"first_stage_model." + k: v for k, v in sd.items()}
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    try:
        cfg = vae_config(shapes, configs.load_component_config(arch, "vae"), "first_stage_model.")
        with tempfile.TemporaryDirectory(prefix="sfumato-vae-") as tmp:
            (Path(tmp) / "vae").mkdir()
            (Path(tmp) / "vae" / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
            vae = AutoencoderKL.from_single_file(sd, config=tmp, subfolder="vae", local_files_only=True)
    except (ShapeError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, f"not a usable VAE: {e}") from e
    if any(p.is_meta for p in vae.parameters()):
        raise CheckpointError(path, "not a usable VAE: some weights are missing")
    dtype = vae_compute_dtype(precision.vae_dtype, bool(getattr(vae.config, "force_upcast", False)))
    vae = torch.nn.Module.to(vae, device=precision.device, dtype=dtype)  # (as Components.to)
    if wants_channels_last(precision.device, dtype):
        vae = vae.to(memory_format=torch.channels_last)
    return vae.eval().requires_grad_(False)


def _cache_key(file: ModelFile) -> tuple[Path, int, int]:
    return (file.path, file.size, file.mtime_ns)


class ModelManager:
    def __init__(
        self,
        config: AppConfig,
        precision: Precision | None = None,
        load_lock: threading.Lock | None = None,
        offloader: Offloader | None = None,
    ) -> None:
        """`load_lock`: held while a file is read into a model. Managers of one process that load at the
        same time (one per job worker) must share one: diffusers builds models on torch's meta device
        with a switch that is process-wide while it is on, so two loads at once break each other.

        With `precision.vram` medvram or lowvram, models are loaded into RAM and `offloader` (default:
        one for the precision's device) moves their parts to the device as they run."""
        self.config = config
        self.precision = precision or Precision()
        self.load_lock = load_lock or threading.Lock()
        if offloader is None and self.precision.vram != "none":
            offloader = Offloader(self.precision.vram, self.precision.device)
        self.offloader = offloader
        self.hashes = HashCache(config.cache_dir / "hashes.sqlite")
        self._models: ModelCache[Components] = ModelCache(config.model_cache_bytes)
        self._vaes: ModelCache[Any] = ModelCache(max(config.model_cache_bytes // 8, 0))
        self._checkpoints = ScanResult(())
        self._vae_files = ScanResult(())
        self._text_encoders = ScanResult(())
        self._families: dict[tuple[Path, int, int], families.Family | None] = {}

    # -- listing -------------------------------------------------------------------------------------
    def refresh(self) -> tuple[str, ...]:
        """Rescan the model folders; return the problems found (missing folders...)."""
        hashes = self.hashes if self.config.hashing else None
        self._checkpoints = scan(self.config.ckpt_dirs, CHECKPOINT_EXTENSIONS, hashes)
        self._vae_files = scan(self.config.vae_dirs, VAE_EXTENSIONS, hashes, folders=False)
        te_dirs = [d for d in self.config.text_encoder_dirs if d.is_dir()]  # optional: SD3/Flux split files
        self._text_encoders = scan(te_dirs, TEXT_ENCODER_EXTENSIONS, None, folders=False)
        return self._checkpoints.problems + self._vae_files.problems + self._text_encoders.problems

    def checkpoints(self) -> tuple[ModelFile, ...]:
        return self._checkpoints.files

    def vaes(self) -> tuple[ModelFile, ...]:
        return self._vae_files.files

    def text_encoders(self) -> tuple[ModelFile, ...]:
        """The text encoder files of split SD3/Flux models (models/text_encoder: clip_l, t5xxl...)."""
        return self._text_encoders.files

    def hash_all(self) -> tuple[ModelFile, ...]:
        """Compute (or read cached) hashes for every checkpoint; titles then carry `[shorthash]`."""
        if self.config.hashing:
            self._checkpoints = dataclasses.replace(
                self._checkpoints, files=tuple(with_hash(f, self.hashes) for f in self._checkpoints.files)
            )
        return self._checkpoints.files

    def resolve(self, query: str | None) -> ModelFile:
        """The checkpoint a request names; None means the first one found."""
        files = self.checkpoints()
        if query is None or query == "":
            if not files:
                folders = ", ".join(str(d) for d in self.config.ckpt_dirs)
                raise ModelNotFound(
                    "checkpoint",
                    "(default)",
                    [],
                    f"no checkpoints found in {folders}: put .safetensors/.ckpt files "
                    "there, point --data-dir at an AUTOMATIC1111 folder, or try --demo-model",
                )
            return files[0]
        hit = find(files, query)
        if hit is None:
            raise ModelNotFound("checkpoint", query, [f.title for f in files])
        return hit

    def resolve_vae(self, query: str | None) -> ModelFile | None:
        """None, "" and "Automatic"/"None" mean the checkpoint's own VAE."""
        if query is None or query in ("", "Automatic", "None"):
            return None
        hit = find(self.vaes(), query)
        if hit is None:
            raise ModelNotFound("VAE", query, [f.name for f in self.vaes()])
        return hit

    def resolve_modules(self, queries: Sequence[str]) -> tuple[ModelFile, ...]:
        """The VAE / text encoder files a request names (file name, name without extension, or full
        path, as Forge's forge_additional_modules), in order; ModelNotFound lists the valid names."""
        files = (*self.vaes(), *self.text_encoders())
        out = []
        for query in queries:
            hit = find(files, query) or next((f for f in files if str(f.path) == query), None)
            if hit is None:
                raise ModelNotFound("module", query, [f.name for f in files])
            out.append(hit)
        return tuple(out)

    # -- loading -------------------------------------------------------------------------------------
    def _fresh(self, file: ModelFile) -> ModelFile:
        """`file` as it is on disk now: a file replaced or rewritten since the scan is a new file (its
        hash is computed again and it is loaded again; the old copy leaves the cache when unused)."""
        if file.is_folder:
            return file
        try:
            st = file.path.stat()
        except OSError as e:
            raise CheckpointError(file.path, f"cannot read file: {e.strerror or e}") from e
        if (st.st_size, st.st_mtime_ns) == (file.size, file.mtime_ns):
            return file
        new = dataclasses.replace(file, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None)
        for scan_attr in ("_checkpoints", "_vae_files"):
            result: ScanResult = getattr(self, scan_attr)
            if file in result.files:
                files = tuple(new if f == file else f for f in result.files)
                setattr(self, scan_attr, dataclasses.replace(result, files=files))
        self._models.discard(lambda key: isinstance(key, tuple) and key[0] == file.path)
        self._vaes.discard(lambda key: isinstance(key, tuple) and key[0] == file.path)
        return new

    @contextmanager
    def acquire(
        self, checkpoint: str | None = None, vae: str | None = None, modules: Sequence[str] = ()
    ) -> Iterator[LoadedModel]:
        """Hold a loaded model (from the cache or freshly loaded) for the duration of the block;
        `modules` name the text encoder / VAE files a split SD3/Flux model is assembled from.

        Without a checkpoint, the first listed one that loads is used: a file that cannot load (a
        partial download, an unknown architecture) is passed over, and `LoadedModel.notes` says so.
        """
        named = bool(checkpoint)
        candidates = [self.resolve(checkpoint)] if named else list(self.checkpoints()) or [self.resolve(None)]
        vae_file = self.resolve_vae(vae)
        parts_files = tuple(self._fresh(m) for m in self.resolve_modules(modules))
        if vae_file is not None:
            vae_file = self._fresh(vae_file)
        passed_over: list[tuple[str, str]] = []
        with ExitStack() as stack:
            for i, candidate in enumerate(candidates):
                file = self._fresh(candidate)
                if self.config.hashing:
                    file = with_hash(file, self.hashes)
                try:
                    key = (*_cache_key(file), *(_cache_key(m) for m in parts_files))
                    parts = stack.enter_context(self._models.use(key, self._loader(file, parts_files)))
                    break
                except (CheckpointError, ShapeError) as e:
                    if named or i == len(candidates) - 1:
                        raise
                    passed_over.append((file.name, str(e)))
            notes = tuple(
                f"the default checkpoint {name} cannot be loaded ({why}); using {file.name}"
                for name, why in passed_over
            )
            if vae_file is None:
                yield LoadedModel(file, parts, notes=notes)
                return
            arch = parts.arch
            if families.of(parts).flow_matching:
                raise CheckpointError(
                    vae_file.path,
                    f"a separate VAE cannot be chosen for {parts.label} models yet: they take the VAE in "
                    "their file, else ae.safetensors from the VAE folder (use Automatic)",
                )

            def load_vae() -> tuple[Any, int]:
                with self.load_lock:
                    v = load_vae_file(vae_file.path, arch, self.precision.storage)
                if self.offloader is not None:
                    self.offloader.attach("vae", v, "vae", owner=v)
                return v, sum(t.numel() * t.element_size() for t in v.parameters())

            with self._vaes.use((*_cache_key(vae_file), arch), load_vae) as v:
                yield LoadedModel(file, dataclasses.replace(parts, vae=v), vae_file, notes)

    def _loader(
        self, file: ModelFile, modules: Sequence[ModelFile] = ()
    ) -> Callable[[], tuple[Components, int]]:
        def load() -> tuple[Components, int]:
            config = self.config
            extra = [m.path for m in modules]
            with self.load_lock:
                parts = load_model(
                    file.path, self.precision.storage, config.text_encoder_dirs, config.vae_dirs, extra
                )
            if self.offloader is not None:
                self.offloader.attach_components(parts)
            return parts, parts.nbytes()

        return load

    def family_of(self, file: ModelFile) -> families.Family | None:
        """The family of a listed checkpoint, from a safetensors header or a diffusers folder's configs
        (no weights read; remembered per file version); None when that cannot tell it (a `.ckpt`)."""
        key = _cache_key(file)
        if key not in self._families:
            self._families[key] = family_of_path(file.path)
        return self._families[key]

    def unload(self) -> int:
        """Drop every cached model and VAE not in use now (a running job keeps its own until it ends);
        the number of models still held by a job."""
        import gc

        import torch

        self._models.clear()
        self._vaes.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return len(self._models.lru_keys())

    def preload(self, checkpoint: str | None, vae: str | None = None) -> ModelFile:
        """Load a checkpoint (and VAE) into the cache now, as A1111's reload does; the file loaded."""
        with self.acquire(checkpoint, vae) as model:
            return model.file

    def cached(self) -> list[Path]:
        """Paths of the models in the RAM cache, least recently used first."""
        return [k[0] for k in self._models.lru_keys() if isinstance(k, tuple)]
