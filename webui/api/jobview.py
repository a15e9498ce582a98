"""Jobs as the APIs show them: JSON views, owner checks, and result files that are safe to serve.

A result file path comes only from the job record, and is served only when it resolves (symlinks
followed) to a regular file inside the outputs folder.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webui.api.redact import public_text
from webui.core.outputs.infotext import parse_infotext

# Infotext keys that have their own entry in A1111's `info`; the rest go to extra_generation_params.
_CORE_INFO_KEYS = frozenset(
    {
        "Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash",
        "Model", "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Seed resize from",
        "Clip skip", "Version", "Denoising strength", "Face restoration",
    }
)  # fmt: skip


def can_see(info: Any, user: str, admin: bool) -> bool:
    return bool(admin or info.owner == user)


def safe_result_path(roots: Sequence[Path | None], path: str | None) -> Path | None:
    """The file, if the recorded path is a regular file inside one of the roots; else None.

    The roots are the outputs folder and the job store's own folder (images not saved to outputs).
    """
    if not path:
        return None
    try:
        target = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    for root in roots:
        if root is None:
            continue
        try:
            base = root.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if target.is_relative_to(base) and target.is_file():
            return target
    return None


def result_roots(services: Any) -> tuple[Path | None, ...]:
    return (services.config.outputs_dir, getattr(services.queue, "files_dir", None))


def job_json(info: Any) -> dict[str, Any]:
    """The native API's view of a job (paths are not shown: images are fetched by index)."""
    base = f"/api/v1/jobs/{info.id}"
    return {
        "id": info.id,
        "owner": info.owner,
        "kind": info.kind,
        "state": info.state.value,
        "created": info.created,
        "started": info.started,
        "finished": info.finished,
        "queue_position": info.queue_position,
        "progress": {
            "step": info.progress.step,
            "steps": info.progress.steps,
            "batch": info.progress.batch,
            "batches": info.progress.batches,
            "eta": info.progress.eta,
            "fraction": info.progress.fraction,
            **(
                {
                    "bytes_done": info.progress.bytes_done,
                    "bytes_total": info.progress.bytes_total,
                    "speed": info.progress.speed,
                }
                if info.kind == "download"
                else {}
            ),
        },
        "images": [
            {
                "index": n,
                "url": f"{base}/images/{n}",
                "seed": i.seed,
                "subseed": i.subseed,
                "infotext": i.infotext,
            }
            for n, i in enumerate(info.images)
        ],
        "grid": f"{base}/images/grid" if info.grid_path else None,
        "preview": f"{base}/preview",
        "model_title": info.model_title,
        "interrupted": info.interrupted,
        "warnings": list(info.warnings),
        "error": public_text(info.error),
        "error_field": info.error_field,
        "attempts": info.attempts,
        "worker": info.worker,
        "request": info.request,
        **({"output": info.output} if info.output is not None else {}),
    }


def _timestamp(when: float | None) -> str:
    if when is None:
        return "0"
    return datetime.datetime.fromtimestamp(when).strftime("%Y%m%d%H%M%S")


def a1111_info(info: Any, request: Any, index_of_first_image: int, version: str) -> str:
    """A1111's `info` (a JSON string) for a finished txt2img/img2img job."""
    images = info.images
    first = parse_infotext(images[0].infotext) if images else {}
    seeds = [i.seed for i in images] or [request.seed]
    subseeds = [i.subseed for i in images] or [request.subseed]
    n = max(len(images), 1)
    data = {
        "prompt": request.prompt,
        "all_prompts": [request.prompt] * n,
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * n,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": subseeds[0],
        "all_subseeds": subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": first.get("Sampler", request.sampler_name),
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": bool(getattr(request, "restore_faces", False)),
        "face_restoration_model": first.get("Face restoration"),
        "sd_model_name": first.get("Model"),
        "sd_model_hash": first.get("Model hash"),
        "sd_vae_name": first.get("VAE"),
        "sd_vae_hash": first.get("VAE hash"),
        "seed_resize_from_w": request.seed_resize_from_w,
        "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": getattr(request, "denoising_strength", None),
        "extra_generation_params": {k: v for k, v in first.items() if k not in _CORE_INFO_KEYS},
        "index_of_first_image": index_of_first_image,
        "infotexts": [i.infotext for i in images],
        "styles": list(request.styles),
        "job_timestamp": _timestamp(info.started),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": first.get("Version", version),
        "warnings": list(info.warnings),
    }
    return json.dumps(data)


def a1111_progress(info: Any | None, queued: int, preview_b64: str | None) -> dict[str, Any]:
    """GET /sdapi/v1/progress for a job (running or queued), or the idle shape for None."""
    state = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": 0,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if info is None:
        return {
            "progress": 0,
            "eta_relative": 0,
            "state": state,
            "current_image": None,
            "textinfo": None,
            "current_task": None,
        }
    p = info.progress
    batches = p.batches or int(info.request.get("n_iter", 1) or 1)
    state.update(
        interrupted=bool(info.interrupted),
        job=f"Batch {max(p.batch, 1)} out of {batches}" if info.state.value == "running" else "",
        job_count=batches,
        job_timestamp=_timestamp(info.started or info.created),
        job_no=max(p.batch - 1, 0),
        sampling_step=p.step,
        sampling_steps=p.steps,
    )
    if info.state.value == "queued":
        text = f"Waiting in the queue: position {info.queue_position} of {queued}"
    else:
        text = f"Batch {max(p.batch, 1)} of {batches}, step {p.step} of {p.steps}"
    eta = p.eta if p.eta is not None else 0.0
    return {
        "progress": p.fraction,
        "eta_relative": eta,
        "state": state,
        "current_image": preview_b64,
        "textinfo": text,
        "current_task": info.id,
    }
