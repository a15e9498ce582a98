"""Small adapters between the routes and the engine: listings in A1111's shapes (styles, embeddings,
LoRAs, from the engine's own stores) and memory figures from /proc/meminfo and torch.cuda. Settings live
in webui.core.settings.SettingsStore (the one store the API and the studio share).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.core.engine import Engine


def styles_listing(engine: Engine) -> list[dict[str, str]]:
    """GET /sdapi/v1/prompt-styles: the engine's styles.csv (the store generation applies)."""
    return [
        {"name": x.name, "prompt": x.prompt, "negative_prompt": x.negative_prompt}
        for x in engine.styles.list()
    ]


def embeddings_listing(engine: Engine) -> dict[str, Any]:
    """GET /sdapi/v1/embeddings. Which embeddings fit depends on the model; without one chosen, every
    readable file is listed as loaded (A1111's shape), and unreadable ones under `skipped` with the reason."""
    library = engine.embeddings.library()
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
    return {"loaded": loaded, "skipped": dict(library.skipped)}


def loras_listing(engine: Engine) -> list[dict[str, Any]]:
    """GET /sdapi/v1/loras: [{name, alias, path, metadata}], as A1111's Lora extension answers."""
    return list(engine.loras.listing())


def face_restorers_listing(engine: Engine) -> list[dict[str, Any]]:
    """GET /sdapi/v1/face-restorers: the ones that can run, [{name, cmd_dir, model_path}] (A1111's shape
    plus the file that serves each). GFPGAN and CodeFormer are listed when their file is installed (one
    not installed is not listed, as nothing is downloaded); RestoreFormer also needs spandrel."""
    return [
        {"name": kind, "cmd_dir": str(path.parent), "model_path": str(path)}
        for kind, path in engine.faces.runnable().items()
    ]


def refresh_loras(engine: Engine) -> dict[str, Any]:
    """POST /sdapi/v1/refresh-loras: re-list the LoRA folders; {} or {"problems": [...]}."""
    problems = engine.loras.refresh()
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
