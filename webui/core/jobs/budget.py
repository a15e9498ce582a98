"""How much work a job asks for, and the per-job limit the queue enforces at submit.

Work is counted in megapixel-steps: width * height / 10^6 * steps, summed over every image the job
makes (batch_size * n_iter), plus the hires second pass at its own size and steps. It is what the
sampling loop's cost grows with, for any model family. One job of 1000 x 500 steps at 512x512 is
131,072 megapixel-steps (weeks on a CPU); a default limit of a few thousand keeps any one job within
minutes on a good GPU while allowing every ordinary request (1024x1024, 30 steps, 8x8 images: 252).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from webui.core.types import RequestError


def job_work(request: Any) -> float:
    """Megapixel-steps of a generation request; 0 for jobs without a sampling loop (extras)."""
    steps = getattr(request, "steps", None)
    width, height = getattr(request, "width", None), getattr(request, "height", None)
    if not isinstance(steps, int) or not isinstance(width, int) or not isinstance(height, int):
        return 0.0
    images = int(getattr(request, "batch_size", 1)) * int(getattr(request, "n_iter", 1))
    per_image = width * height / 1e6 * steps
    if getattr(request, "enable_hr", False) is True:
        from webui.core.tasks.hires import request_target, second_pass_steps

        w, h = request_target(request).size
        per_image += w * h / 1e6 * second_pass_steps(request)
    return per_image * images


def check_work(request: Any, limit: float) -> None:
    """RequestError naming the field to lower when the job is larger than `limit` (0: no limit)."""
    if limit <= 0:
        return
    work = job_work(request)
    if work <= limit:
        return
    n_iter, batch = int(getattr(request, "n_iter", 1)), int(getattr(request, "batch_size", 1))
    field = "n_iter" if n_iter > 1 else "batch_size" if batch > 1 else "steps"
    raise RequestError(
        field,
        f"this job is {work:,.1f} megapixel-steps ({batch} x {n_iter} images of "
        f"{request.width}x{request.height} at {request.steps} steps"
        f"{', plus the hires pass' if getattr(request, 'enable_hr', False) is True else ''}); "
        f"the server takes at most {limit:,g} a job (--max-job-work): lower n_iter, batch_size, "
        "steps or the size, or split it into several jobs",
    )


def stored_work(request: Mapping[str, Any]) -> float:
    """job_work of a request as the store holds it (its fields as JSON), without decoding its images."""
    try:
        return job_work(SimpleNamespace(**request))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0.0  # a record this version cannot read fails when it runs, with its own message


def over_budget_message(work: float, limit: float) -> str:
    return (
        f"not run: this job is {work:,.1f} megapixel-steps, over the server's limit of {limit:,g} a job "
        "(--max-job-work)"
    )
