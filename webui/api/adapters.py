"""Small adapters between the routes and parts of the engine that may or may not be present yet.

Styles and embeddings modules land with their own issue; until then their routes answer A1111's empty
shapes. Settings are read and updated through one lock-guarded holder. Memory figures come from
/proc/meminfo and torch.cuda.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class SettingsHolder:
    """The current Settings (immutable snapshots), replaced atomically under a lock on update."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> SettingsHolder:
        mod = importlib.import_module("webui.core.settings")
        return cls(mod.Settings.load(path))

    @property
    def problem(self) -> str | None:
        return getattr(self._settings, "problem", None)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._settings.as_dict())

    def get(self, key: str) -> Any:
        return self.as_dict().get(key)

    def update(
        self,
        changes: Mapping[str, Any],
        validate_checkpoint: Callable[[str], None],
        validate_vae: Callable[[str], None],
    ) -> dict[str, Any]:
        """Validate every change, write config.json atomically, then publish (nothing changes on error)."""
        with self._lock:
            new = self._settings.updated(dict(changes), validate_checkpoint, validate_vae=validate_vae)
            new.save()
            self._settings = new
            return dict(new.as_dict())


class Styles:
    """GET /sdapi/v1/prompt-styles from styles.csv, once webui.core.prompts.styles exists."""

    def __init__(self, path: Path) -> None:
        mod = _optional("webui.core.prompts.styles")
        self._store = mod.StyleStore(path) if mod is not None and hasattr(mod, "StyleStore") else None

    def listing(self) -> list[dict[str, str]]:
        if self._store is None:
            return []
        return [
            {"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in self._store.list()
        ]


class Embeddings:
    """GET /sdapi/v1/embeddings, once webui.core.prompts.embeddings exists."""

    def __init__(self, folder: Path, hash_cache: Any) -> None:
        mod = _optional("webui.core.prompts.embeddings")
        self._folder = None
        if mod is not None and hasattr(mod, "EmbeddingFolder"):
            self._folder = mod.EmbeddingFolder(folder, hash_cache)

    def listing(self) -> dict[str, Any]:
        if self._folder is None:
            return {"loaded": {}, "skipped": {}}
        # Which embeddings fit depends on the model; without one chosen, every readable file is listed.
        library = self._folder.library()
        loaded = {
            name: {
                "step": e.step,
                "sd_checkpoint": e.sd_checkpoint,
                "sd_checkpoint_name": e.sd_checkpoint_name,
                "shape": e.shape,
                "vectors": e.vector_count,
            }
            for name, e in library.loaded.items()
        }
        return {"loaded": loaded, "skipped": {}}


def lora_library(engine: Any, config: Any) -> Any:
    """The engine's LoRA library (`engine.loras`, shared with generation); until the engine has one, a
    library over the configured folders, built for this call."""
    library = getattr(engine, "loras", None)
    if library is None:
        from webui.core.networks.registry import LoraLibrary

        library = LoraLibrary(config.lora_dirs, config.cache_dir / "hashes.sqlite", hashing=config.hashing)
    return library


def loras_listing(engine: Any, config: Any) -> list[dict[str, Any]]:
    """GET /sdapi/v1/loras: [{name, alias, path, metadata}], as A1111's Lora extension answers."""
    return list(lora_library(engine, config).listing())


def refresh_loras(engine: Any, config: Any) -> dict[str, Any]:
    """POST /sdapi/v1/refresh-loras: re-list the LoRA folders; {} or {"problems": [...]}."""
    problems = lora_library(engine, config).refresh()
    return {"problems": list(problems)} if problems else {}


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def memory() -> dict[str, Any]:
    """A1111's /sdapi/v1/memory: {ram: {free, used, total}, cuda: {...} or {error}}."""
    info = _meminfo()
    if info:
        total = info.get("MemTotal", 0)
        free = info.get("MemAvailable", info.get("MemFree", 0))
        ram: dict[str, Any] = {"free": free, "used": total - free, "total": total}
    else:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
            ram = {"free": free, "used": total - free, "total": total}
        except (ValueError, OSError) as e:
            ram = {"error": str(e)}
    return {"ram": ram, "cuda": _cuda_memory()}


def _cuda_memory() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    try:
        free, total = torch.cuda.mem_get_info()
        s = torch.cuda.memory_stats()
        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {
                "current": s.get("active_bytes.all.current", 0),
                "peak": s.get("active_bytes.all.peak", 0),
            },
            "allocated": {
                "current": s.get("allocated_bytes.all.current", 0),
                "peak": s.get("allocated_bytes.all.peak", 0),
            },
            "reserved": {
                "current": s.get("reserved_bytes.all.current", 0),
                "peak": s.get("reserved_bytes.all.peak", 0),
            },
            "inactive": {
                "current": s.get("inactive_split_bytes.all.current", 0),
                "peak": s.get("inactive_split_bytes.all.peak", 0),
            },
            "events": {"retries": s.get("num_alloc_retries", 0), "oom": s.get("num_ooms", 0)},
        }
    except RuntimeError as e:
        return {"error": str(e)}
