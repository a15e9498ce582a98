"""What travels between the server and a remote worker (a Ray actor), and the server's side of it.

The server owns the job store and the disk: a remote worker gets a `JobSpec` (the request, decoded by
the server with its input images in it), and streams back `ProgressMsg`, `ImageMsg` (PNG bytes, seed,
infotext: one per finished image; a copy made before face restoration is one too, marked `copy`) and a
final `DoneMsg`. `RemoteImages` writes each image to disk (the
outputs folder as the settings say, or the job's folder) before the job lists it, so what a user sees
is on the server's disk. Nothing here imports Ray: the messages are plain frozen dataclasses.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from webui.core.jobs.codec import JobRequest, kind_of
from webui.core.jobs.info import JobImage, JobProgressInfo
from webui.core.jobs.worker import Outcome, Reporter
from webui.core.outputs.grid import image_grid
from webui.core.outputs.options import BEFORE_FACE_RESTORATION, OutputOptions
from webui.core.outputs.saving import save_image

GENERATION_KINDS = frozenset({"txt2img", "img2img"})  # saved under outputs/<kind>-images as settings say


class WorkerFault(RuntimeError):
    """A remote worker died mid-job or sent something unreadable: the job may run once more elsewhere."""


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    request: JobRequest
    preview_every: int = 0
    # the server's settings as the job starts (SettingsStore.as_dict: no secrets), read by the worker's
    # engine and extensions for this job, as the server's own would read them
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressMsg:
    info: JobProgressInfo
    preview_png: bytes | None = None


@dataclass(frozen=True)
class ImageMsg:
    png: bytes
    seed: int
    subseed: int
    infotext: str
    # a copy made before face restoration ("save_images_before_face_restoration"): written beside the
    # images, before the one it precedes, and not listed as one of the job's images
    copy: bool = False


@dataclass(frozen=True)
class DoneMsg:
    model_title: str | None = None
    interrupted: bool = False
    error: str | None = None
    error_field: str | None = None
    warnings: tuple[str, ...] = ()
    output: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """What a remote worker says of itself when it starts (and after a restart)."""

    pid: int
    node: str
    device: str
    checkpoints: tuple[frozenset[str], ...]  # per checkpoint: the names it answers to (title, hash, ...)

    def has_checkpoint(self, query: str | None, sha256: str | None = None) -> bool:
        """Whether this worker can load `query` (None: the default, any checkpoint); a file with the same
        sha256 under another name counts as the same model."""
        if query is None:
            return bool(self.checkpoints)
        wanted = {query.strip()}
        if query.endswith("]") and " [" in query:
            wanted.add(query.rsplit(" [", 1)[0])
        if sha256:
            wanted.add(sha256)
        return any(wanted & names for names in self.checkpoints)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def read_png(data: bytes) -> Image.Image:
    """The image in `data`; WorkerFault when it is not a readable picture."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.copy()
    except Exception as e:
        raise WorkerFault(f"the worker sent an unreadable image ({type(e).__name__}: {e})") from e


class RemoteImages:
    """The server's copy of a remote job's images: each written to disk as it arrives, then listed."""

    def __init__(
        self, request: JobRequest, results_dir: Path, outputs: OutputOptions, report: Reporter
    ) -> None:
        self.kind = kind_of(request)
        self.to_outputs = (
            self.kind in GENERATION_KINDS
            and bool(getattr(request, "save_images", False))
            and outputs.samples_save
        )
        self.grid = self.kind in GENERATION_KINDS and bool(getattr(request, "save_images", False))
        self.extras = self.kind == "extras" and bool(getattr(request, "save_images", False))
        self.results_dir, self.outputs, self.report = results_dir, outputs, report
        self.done: list[JobImage] = []
        self.pictures: list[Image.Image] = []

    def add(self, msg: ImageMsg) -> None:
        picture = read_png(msg.png)
        if msg.copy:
            if self.to_outputs and self.outputs.save_before_face_restoration:
                kind = f"{self.kind}-images"
                self.outputs.save(picture, kind, msg.seed, msg.infotext, suffix=BEFORE_FACE_RESTORATION)
            return
        if self.to_outputs:
            path = self.outputs.save(picture, f"{self.kind}-images", msg.seed, msg.infotext)
        elif self.extras:  # outputs/extras-images/NNNNN.<fmt>, as an in-process run writes them
            opts = self.outputs
            text = msg.infotext if opts.enable_pnginfo else ""
            folder = opts.outputs_dir / "extras-images"
            path = save_image(picture, folder, None, text, opts.samples_format, quality=opts.jpeg_quality)
        else:
            path = save_image(picture, self.results_dir, msg.seed, msg.infotext)
        self.done.append(JobImage(str(path), msg.seed, msg.subseed, msg.infotext))
        self.pictures.append(picture)
        self.report.images(tuple(self.done))

    def outcome(self, done: DoneMsg) -> Outcome:
        images: Sequence[JobImage] = self.done
        grid_path = None
        if done.error is None and self.grid and self.outputs.grid_save and len(self.pictures) > 1:
            first = self.done[0]
            grid = image_grid(self.pictures)
            grid_path = str(
                self.outputs.save(grid, f"{self.kind}-grids", first.seed, first.infotext, grid=True)
            )
        if done.warnings and done.error is None:
            images = [JobImage(i.path, i.seed, i.subseed, i.infotext, warnings=done.warnings) for i in images]
        return Outcome(
            tuple(images),
            grid_path=grid_path,
            model_title=done.model_title,
            interrupted=done.interrupted,
            error=done.error,
            error_field=done.error_field,
            output=done.output,
        )
