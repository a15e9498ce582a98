"""What the UI and the API see of a job: states, errors, and frozen read-only views (JobInfo, JobEvent)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class QueueFull(Exception):
    """The queue holds its limit of waiting jobs (API: 429)."""


class JobNotFound(LookupError):
    """No job has this id (API: 404)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class NotAllowed(PermissionError):
    """The caller is neither the job's owner nor an admin (API: 403)."""


class NotFinished(RuntimeError):
    """The job is still queued or running; what was asked needs a finished one (API: 409)."""


@dataclass(frozen=True)
class JobProgressInfo:
    step: int = 0  # steps done in the current batch
    steps: int = 0
    batch: int = 0  # 1-based; 0 before the first step
    batches: int = 0
    eta: float | None = None  # seconds left in the current batch's sampling
    fraction: float = 0.0  # 0..1 over the whole job (all batches)
    # a download's transfer (0 for other jobs): bytes on disk, bytes in all (0: unknown), bytes a second
    bytes_done: int = 0
    bytes_total: int = 0
    speed: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "steps": self.steps,
            "batch": self.batch,
            "batches": self.batches,
            "eta": self.eta,
            "fraction": self.fraction,
        }
        if self.bytes_done or self.bytes_total:
            out.update(bytes_done=self.bytes_done, bytes_total=self.bytes_total, speed=self.speed)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobProgressInfo:
        return cls(
            step=int(data.get("step", 0)),
            steps=int(data.get("steps", 0)),
            batch=int(data.get("batch", 0)),
            batches=int(data.get("batches", 0)),
            eta=None if data.get("eta") is None else float(data["eta"]),
            fraction=float(data.get("fraction", 0.0)),
            bytes_done=int(data.get("bytes_done", 0)),
            bytes_total=int(data.get("bytes_total", 0)),
            speed=float(data.get("speed", 0.0)),
        )


@dataclass(frozen=True)
class JobImage:
    path: str
    seed: int
    subseed: int
    infotext: str
    # what the run that made this image warned about (a missing LoRA, a model passed over); stored with
    # each image, because the image list is what the job record keeps of a finished run
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "seed": self.seed,
            "subseed": self.subseed,
            "infotext": self.infotext,
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobImage:
        warnings = tuple(str(w) for w in data.get("warnings") or ())
        seed, subseed = int(data["seed"]), int(data["subseed"])
        return cls(str(data["path"]), seed, subseed, str(data["infotext"]), warnings)


@dataclass(frozen=True)
class JobInfo:
    id: str
    owner: str
    kind: str  # "txt2img" | "img2img"
    state: JobState
    request: dict[str, Any]  # the request as JSON (webui.core.jobs.codec)
    created: float
    started: float | None
    finished: float | None
    progress: JobProgressInfo
    queue_position: int | None  # 1-based place among queued jobs in run order; None unless queued
    images: tuple[JobImage, ...]  # finished images (also for partially finished or failed jobs)
    grid_path: str | None
    model_title: str | None
    interrupted: bool  # stopped early by cancel/interrupt
    error: str | None  # failure reason (also for jobs failed by a crash)
    attempts: int  # how many times a worker has started it
    error_field: str | None = None  # failed on a bad request value: the field it named (API: 422)
    worker: str | None = None  # the worker id that runs it, or ran it last ("host:pid:name")
    output: dict[str, Any] | None = None  # what a job without images made (a download: its file)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the job's run warned about (each message once, in order), read from its images (and
        from its output, for a job without images)."""
        seen: dict[str, None] = {}
        for image in self.images:
            seen.update(dict.fromkeys(image.warnings))
        seen.update(dict.fromkeys(str(w) for w in (self.output or {}).get("warnings", ())))
        return tuple(seen)


EVENT_KINDS = ("queued", "started", "progress", "image", "done", "failed", "cancelled")
FINAL_EVENT_KINDS = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    seq: int  # 1, 2, ... per job, in order
    kind: str  # one of EVENT_KINDS
    info: JobInfo
    preview_png: bytes | None = None


def check_access(info: JobInfo, by: str, admin: bool = False) -> None:
    """Raise NotAllowed unless `by` owns the job or is an admin."""
    if not admin and by != info.owner:
        raise NotAllowed(f"job {info.id} belongs to another user")
