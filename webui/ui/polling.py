"""Following a job from the browser: status HTML, live preview, finished images, every ~0.25 s.

`follow(queue, job_id)` yields `Frame`s until the job is done, failed or cancelled. A tab turns each
frame into its outputs (`None` fields become `gr.skip()`, so an unchanged preview is not re-sent).
All text that reaches HTML goes through `html.escape`.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Frame:
    status: str  # HTML
    preview: Any | None = None  # PIL image; None: unchanged
    gallery: list[tuple[str, str]] | None = None  # (path, caption); None: unchanged
    infotexts: list[str] | None = None
    seeds: list[int] | None = None
    done: bool = False
    warnings: tuple[str, ...] | None = None  # what the job warned about; () clears the box; None: unchanged


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s"


def status_text(info: Any, now: float | None = None) -> str:
    """One line about the job: queue position, batch/step, ETA, or how it ended (plain text)."""
    now = time.time() if now is None else now
    state = info.state.value
    p = info.progress
    if state == "queued":
        pos = info.queue_position
        return f"Queued: position {pos} in line" if pos else "Queued"
    if state == "running":
        if info.kind == "extras":
            done = f": {p.batch} of {p.batches} done" if p.batches else ""
            return f"Upscaling{done}…"
        if not p.steps:
            return "Starting (loading the model)…"
        parts = []
        if p.batches > 1:
            parts.append(f"batch {p.batch}/{p.batches}")
        first = first_pass_steps(info)
        hires = first is not None and p.step > first
        step, steps = (p.step - first, p.steps - first) if first is not None and hires else (p.step, p.steps)
        parts.append(f"step {step}/{steps}")
        if p.eta is not None:
            parts.append(f"ETA {_duration(p.eta)}")
        return ("Hires pass: " if hires else "Generating: ") + ", ".join(parts)
    took = f" in {_duration(info.finished - info.started)}" if info.finished and info.started else ""
    count = len(info.images)
    images = f"{count} image{'s' if count != 1 else ''}"
    if state == "done":
        return f"Done{took}: {images}"
    if state == "cancelled":
        return f"Interrupted{took}: {images} kept"
    return f"Failed: {info.error or 'unknown error'}"


def first_pass_steps(info: Any) -> int | None:
    """A hires-fix job's first-pass steps (its progress counts both passes' steps in one run, the
    second pass's after these: webui.core.tasks.txt2img_batch); None for a job without a second pass."""
    request = getattr(info, "request", None) or {}
    steps = request.get("steps")
    if request.get("enable_hr") is not True or not isinstance(steps, int) or info.progress.steps <= steps:
        return None
    return steps


def status_html(text: str, fraction: float = 0.0, kind: str = "info", busy: bool = False) -> str:
    """A progress bar and one escaped line of text. `busy` (a job queued or running) marks it for the
    page script: the tab's Generate gives way to Interrupt/Skip and the window title shows the progress."""
    pct = max(0.0, min(1.0, fraction)) * 100
    mark = f" data-busy='1' data-pct='{pct:.0f}'" if busy else ""
    return (
        f"<div class='sf-status sf-{html.escape(kind)}'{mark}>"
        f"<div class='sf-bar'><div class='sf-fill' style='width:{pct:.1f}%'></div></div>"
        f"<div class='sf-text'>{html.escape(text)}</div></div>"
    )


def warnings_html(warnings: tuple[str, ...] | list[str]) -> str:
    """The warning box under a tab's gallery (escaped); empty when there is nothing to say."""
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    title = "Warning" if len(warnings) == 1 else f"{len(warnings)} warnings"
    return f"<div class='sf-warnings' role='status'><strong>{title}</strong><ul>{items}</ul></div>"


Note = Callable[[Any], "str | None"]  # (job info) -> what the user asked for and is still pending, or None


def info_html(info: Any, note: Note | None = None) -> str:
    """The status of a job; a pending request of the user ("Interrupting…") leads while it holds."""
    kind = {"failed": "error", "cancelled": "warn", "done": "ok"}.get(info.state.value, "info")
    fraction = 1.0 if info.state.value == "done" else info.progress.fraction
    text = status_text(info)
    pending = note(info) if note is not None and not info.state.finished else None
    if pending:
        text, kind = f"{pending} ({text})", "warn"
    return status_html(text, fraction, kind, busy=not info.state.finished)


def caption(info: Any, image: Any) -> str:
    """A gallery caption: the seed, or for an upscale (which has none) the image's place in the job."""
    return f"image {image.seed + 1}" if info.kind == "extras" else f"seed {image.seed}"


def gallery_items(info: Any) -> list[tuple[str, str]]:
    return [(img.path, caption(info, img)) for img in info.images]


def decode_preview(data: bytes, width: int | None = None) -> Any:
    """The preview picture; with `width`, scaled (smoothly, aspect kept) to the output's width, so the
    tab draws it at the size the finished image will have, not as a thumbnail."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        picture = im.copy()
    if width and width > 0 and picture.width and picture.width != width:
        height = max(1, round(picture.height * width / picture.width))
        picture = picture.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return picture


def output_width(info: Any) -> int | None:
    """How wide the job's finished pictures will be (the hires target's width with hires fix)."""
    request = getattr(info, "request", None) or {}
    try:
        width = int(request["width"])
        rx, ry = int(request.get("hr_resize_x", 0) or 0), int(request.get("hr_resize_y", 0) or 0)
        if request.get("enable_hr") is True and rx > 0 and ry > 0:
            width = rx  # both sides given: cropped to exactly that size
        elif request.get("enable_hr") is True:
            from webui.core.sizes import hires_target

            width = hires_target(
                width,
                int(request["height"]),
                float(request.get("hr_scale", 2.0)),
                rx,
                ry,
            ).upscale_to_x
        return width if width > 0 else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def follow(
    queue: Any,
    job_id: str,
    poll: float = POLL_SECONDS,
    timeout: float | None = None,
    note: Note | None = None,
) -> Iterator[Frame]:
    """Frames for a job until it finishes (or timeout seconds pass; the job itself goes on). `note`
    says what the user asked of the job that has not happened yet (shown before the status)."""
    last_preview: bytes | None = None
    shown_images = -1
    deadline = None if timeout is None else time.monotonic() + timeout
    seq = 0
    while True:
        info = queue.get(job_id)
        preview_bytes = queue.latest_preview(job_id)
        preview = None
        if preview_bytes is not None and preview_bytes is not last_preview and not info.state.finished:
            last_preview = preview_bytes
            preview = decode_preview(preview_bytes, output_width(info))
        gallery = infotexts = seeds = None
        if len(info.images) != shown_images or info.state.finished:
            shown_images = len(info.images)
            gallery = gallery_items(info)
            infotexts = [i.infotext for i in info.images]
            seeds = [i.seed for i in info.images]
        if info.state.finished:
            yield Frame(info_html(info), None, gallery, infotexts, seeds, done=True, warnings=info.warnings)
            return
        yield Frame(info_html(info, note), preview, gallery if info.images else None, infotexts, seeds)
        if deadline is not None and time.monotonic() > deadline:
            return
        started = time.monotonic()
        events = queue.events(job_id, seq, timeout=poll)  # wakes early on news
        if events:
            seq = events[-1].seq
            if events[-1].kind not in ("done", "failed", "cancelled"):
                time.sleep(max(0.0, poll - (time.monotonic() - started)))  # at most one frame per poll
