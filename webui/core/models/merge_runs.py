"""Checkpoint merges people start from the studio or the API: names resolved, one at a time, in the
background, with progress and cancel.

`MergeSpec` has the fields of A1111's Checkpoint Merger (`primary_model_name`, `interp_method`, ...).
`plan_merge` turns it into a `MergeRequest` on files: models are named as in every other request
(title, name or hash), the output goes to the first checkpoint folder as
`<custom_name or A1111's generated name>.safetensors`, and an existing file is never overwritten.
`MergeRuns` runs one merge at a time on its own thread (merging is disk and CPU work: jobs keep
running meanwhile), reports tensors written out of the total, cancels between tensors, and rescans the
checkpoint list when a merge is written so the new model can be picked at once.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from webui.core.models.checkpoint_file import CheckpointError
from webui.core.models.manager import ModelNotFound
from webui.core.models.merge import METHODS, MergeCancelled, MergeError, MergeRequest, merge_checkpoints
from webui.core.models.registry import ModelFile

FORMATS = ("safetensors",)  # never pickles: a .ckpt written here could not be loaded safely elsewhere
_BAD_NAME = re.compile(r"[\\/:*?\"<>|\x00-\x1f]")
MAX_KEPT = 20  # finished runs remembered for status queries


@dataclass(frozen=True)
class MergeSpec:
    """A merge as A1111's Checkpoint Merger asks for it (its field names)."""

    primary_model_name: str = ""
    secondary_model_name: str = ""
    tertiary_model_name: str = ""
    interp_method: str = "Weighted sum"
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    bake_in_vae: str = "None"
    discard_weights: str = ""
    save_metadata: bool = True


def _number(value: float) -> str:
    return f"{round(value, 2):g}"


def default_name(spec: MergeSpec, a: ModelFile, b: ModelFile | None, c: ModelFile | None) -> str:
    """A1111's generated file name: primary_(1-M)-secondary_M-Weighted_sum-merged (and the like)."""
    method = spec.interp_method.replace(" ", "_")
    if b is None:
        return f"{a.model_name}-{method}-merged"
    if spec.interp_method == "Add difference" and c is not None:
        return f"{a.model_name}_{_number(spec.multiplier)}-{b.model_name}-{c.model_name}-{method}-merged"
    m = spec.multiplier
    return f"{a.model_name}_{_number(1 - m)}-{b.model_name}_{_number(m)}-{method}-merged"


def plan_merge(manager: Any, spec: MergeSpec) -> tuple[MergeRequest, dict[str, str]]:
    """The file-level request for `spec` and the metadata naming its models (titles with hashes).

    Raises MergeError naming the field at fault: unknown models, a method that needs a model not
    given, an output name that is not a plain file name or already exists, a format other than
    safetensors."""
    if spec.interp_method not in METHODS:
        raise MergeError("interp_method", f"must be one of {', '.join(METHODS)}, not {spec.interp_method!r}")
    if spec.checkpoint_format not in FORMATS:
        raise MergeError(
            "checkpoint_format", "only safetensors is written (a pickled .ckpt cannot be loaded safely)"
        )
    if not spec.primary_model_name:
        raise MergeError("primary_model_name", "choose the primary model (A)")

    def model(name: str, fieldname: str) -> ModelFile:
        try:
            return manager.resolve(name)  # type: ignore[no-any-return]
        except ModelNotFound as e:  # its message names what exists
            raise MergeError(fieldname, str(e)) from e

    a = model(spec.primary_model_name, "primary_model_name")
    b = c = None
    if spec.interp_method != "No interpolation":
        if not spec.secondary_model_name:
            raise MergeError("secondary_model_name", f"{spec.interp_method} needs a secondary model (B)")
        b = model(spec.secondary_model_name, "secondary_model_name")
    if spec.interp_method == "Add difference":
        if not spec.tertiary_model_name:
            raise MergeError("tertiary_model_name", "Add difference needs a tertiary model (C)")
        c = model(spec.tertiary_model_name, "tertiary_model_name")
    for f, name in ((a, "primary_model_name"), (b, "secondary_model_name"), (c, "tertiary_model_name")):
        if f is not None and f.is_folder:
            raise MergeError(name, f"{f.name} is a diffusers folder: merge single-file checkpoints")
    vae = None
    if spec.bake_in_vae not in ("", "None"):
        try:
            vae = manager.resolve_vae(spec.bake_in_vae)
        except ModelNotFound as e:  # its message names the VAEs there are
            raise MergeError("bake_in_vae", str(e)) from e
    name = spec.custom_name.strip() or default_name(spec, a, b, c)
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if _BAD_NAME.search(name) or name in (".", "..") or name.startswith("."):
        raise MergeError(
            "custom_name", f"{name!r} is not a plain file name (no folders or special characters)"
        )
    output = Path(manager.config.ckpt_dirs[0]) / f"{name}.safetensors"
    if output.exists():
        raise MergeError(
            "custom_name", f"{output.name} already exists: choose another name (nothing is overwritten)"
        )
    request = MergeRequest(
        primary=a.path,
        output=output,
        method=spec.interp_method,
        secondary=b.path if b else None,
        tertiary=c.path if c else None,
        multiplier=float(spec.multiplier),
        save_as_half=spec.save_as_half,
        bake_in_vae=vae.path if vae else None,
        discard_weights=spec.discard_weights,
        save_metadata=spec.save_metadata,
    )
    models = {k: f.title for k, f in (("primary", a), ("secondary", b), ("tertiary", c)) if f is not None}
    meta = (
        {"sd_merge_models": "; ".join(f"{k}: {v}" for k, v in models.items())} if spec.save_metadata else {}
    )
    return request, meta


@dataclass(frozen=True)
class MergeStatus:
    """Where one merge is: state "running", "done", "failed" or "cancelled"."""

    id: str
    owner: str
    state: str
    spec: MergeSpec
    output: str = ""  # the file name written (or to be written)
    written: int = 0
    total: int = 0
    error: str = ""
    field: str = ""  # the request field an error names
    started: float = 0.0
    finished: float = 0.0
    merged: int = 0  # tensors mixed from the sources

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = asdict(self.spec)
        return out


class MergeBusy(RuntimeError):
    """Another merge is running (one at a time)."""


@dataclass
class _Run:
    status: MergeStatus
    cancel: threading.Event = field(default_factory=threading.Event)


class MergeRuns:
    """Runs merges one at a time in the background for a model manager (see the module docstring)."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._running: str | None = None

    def start(self, spec: MergeSpec, owner: str) -> MergeStatus:
        """Check `spec` (MergeError naming the field) and start it; MergeBusy while another runs."""
        request, meta = plan_merge(self._manager, spec)
        with self._lock:
            if self._running is not None:
                raise MergeBusy(f"a merge is already running ({self._runs[self._running].status.output})")
            run_id = uuid.uuid4().hex[:12]
            status = MergeStatus(run_id, owner, "running", spec, request.output.name, started=time.time())
            self._runs[run_id] = _Run(status)
            self._running = run_id
            self._forget_old()
        threading.Thread(
            target=self._work, args=(run_id, request, meta), name=f"merge-{run_id}", daemon=True
        ).start()
        return status

    def status(self, run_id: str) -> MergeStatus | None:
        with self._lock:
            run = self._runs.get(run_id)
            return run.status if run else None

    def runs(self) -> list[MergeStatus]:
        """Every remembered merge, newest first."""
        with self._lock:
            return sorted((r.status for r in self._runs.values()), key=lambda s: -s.started)

    def cancel(self, run_id: str) -> bool:
        """Ask a running merge to stop (nothing is written); False when it is not running."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status.state != "running":
                return False
            run.cancel.set()
            return True

    def wait(self, run_id: str, timeout: float) -> MergeStatus | None:
        """The status once the merge has ended, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.status(run_id)
            if s is None or s.state != "running" or time.monotonic() >= deadline:
                return s
            time.sleep(0.05)

    def _update(self, run_id: str, **changes: Any) -> None:
        with self._lock:
            run = self._runs[run_id]
            run.status = replace(run.status, **changes)
            if changes.get("state", "running") != "running" and self._running == run_id:
                self._running = None

    def _forget_old(self) -> None:
        ended = sorted(
            (r.status for r in self._runs.values() if r.status.state != "running"), key=lambda s: s.started
        )
        for s in ended[: max(0, len(ended) - MAX_KEPT)]:
            del self._runs[s.id]

    def _work(self, run_id: str, request: MergeRequest, meta: dict[str, str]) -> None:
        cancel = self._runs[run_id].cancel
        try:
            result = merge_checkpoints(
                request,
                metadata=meta,
                progress=lambda done, total: self._update(run_id, written=done, total=total),
                cancelled=cancel.is_set,
            )
        except MergeCancelled:
            self._update(run_id, state="cancelled", finished=time.time())
        except MergeError as e:
            self._update(run_id, state="failed", error=str(e), field=e.field, finished=time.time())
        except (CheckpointError, OSError, ValueError, RuntimeError) as e:
            self._update(run_id, state="failed", error=_plain(e, request), finished=time.time())
        else:
            self._manager.refresh()
            self._update(run_id, state="done", merged=result.merged, finished=time.time())


def _plain(error: Exception, request: MergeRequest) -> str:
    """An error message without absolute paths (the file names are enough to act on)."""
    text = str(error)
    for p in (request.primary, request.secondary, request.tertiary, request.output, request.bake_in_vae):
        if p is not None:
            text = text.replace(str(p.parent) + "/", "")
    return text
