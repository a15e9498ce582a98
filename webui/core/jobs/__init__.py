"""The persistent job queue: jobs in SQLite, one worker per device, fair order, events, cancel."""

from __future__ import annotations

from webui.core.jobs.codec import REQUEST_KINDS, kind_of, request_from_json, request_to_json
from webui.core.jobs.info import (
    JobEvent,
    JobImage,
    JobInfo,
    JobNotFound,
    JobProgressInfo,
    JobState,
    NotAllowed,
    NotFinished,
    QueueFull,
    check_access,
)
from webui.core.jobs.queue import JobQueue
from webui.core.jobs.scaling import QueueClosed, WorkersFixed
from webui.core.jobs.store import StoreError

__all__ = [
    "REQUEST_KINDS",
    "JobEvent",
    "JobImage",
    "JobInfo",
    "JobNotFound",
    "JobProgressInfo",
    "JobQueue",
    "JobState",
    "NotAllowed",
    "NotFinished",
    "QueueClosed",
    "WorkersFixed",
    "QueueFull",
    "StoreError",
    "check_access",
    "kind_of",
    "request_from_json",
    "request_to_json",
]
