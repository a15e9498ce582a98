"""One job worker inside a Ray actor: its own model manager and engine, no job store, no disk writes.

`ray_pool` wraps `RemoteWorker` with `ray.remote` (this module does not import Ray). The server sends a
`JobSpec`; `run` is a generator that yields `ProgressMsg` / `ImageMsg` as the engine makes them and one
`DoneMsg` at the end. `control` runs on another of the actor's threads, so a cancel or skip reaches the
job while it runs. Images are sent, never saved here: the server writes them to its own disk.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.extension_points import NO_HOOKS, EngineHooks
from webui.core.jobs.control import StoreCancelToken
from webui.core.jobs.info import JobImage, JobProgressInfo
from webui.core.jobs.remote import DoneMsg, ImageMsg, JobSpec, ProgressMsg, WorkerInfo, png_bytes
from webui.core.jobs.worker import execute
from webui.core.outputs.options import OutputOptions
from webui.core.tasks.extras import ExtrasRequest
from webui.core.types import GeneratedImage

log = logging.getLogger(__name__)

_END = object()


class _Sender:
    """The Reporter of a remote run: progress goes into the run's message queue (images go by `place`)."""

    def __init__(self, out: queue.Queue[Any]) -> None:
        self.out = out

    def progress(self, info: JobProgressInfo, preview_png: bytes | None) -> None:
        self.out.put(ProgressMsg(info, preview_png))

    def images(self, images: Any) -> None:
        pass


class RemoteWorker:
    """A worker holding one device's models: `config` is the server's (models at the same paths on
    every node), `threads` the torch threads it may use (CPU workers), `make_hooks(config)` builds the
    extensions the server runs (webui.plugins.host.PluginHost.for_config; None: none), loaded here from
    this node's folders. Each job brings the server's settings (JobSpec.settings): the engine and the
    extensions read those, so a job runs here as it would in the server."""

    def __init__(
        self,
        config: AppConfig,
        threads: int = 0,
        make_hooks: Callable[[AppConfig], EngineHooks] | None = None,
    ) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.config = config
        self._settings: Mapping[str, Any] = {}
        hooks = make_hooks(config) if make_hooks is not None else NO_HOOKS
        attach = getattr(hooks, "attach_settings", None)
        if attach is not None:
            attach(self.setting)
        # chooses this node's device; scans this node's model folders
        self.engine = Engine(config, hooks=hooks, settings=self.setting)
        self._tokens: dict[str, StoreCancelToken] = {}
        self._lock = threading.Lock()
        # where execute() would save if asked: never created, saving is off and images go by `place`
        self._scratch = Path(tempfile.gettempdir()) / f"sfumato-ray-worker-{os.getpid()}"

    def setting(self, key: str) -> Any:
        """A setting as the server had it when the running job started (None: unset or unknown)."""
        return self._settings.get(key)

    def info(self) -> WorkerInfo:
        files = self.engine.manager.checkpoints()
        names = tuple(
            frozenset(
                n
                for n in (f.title, f.name, f.model_name, f.shorthash, f.sha256, f.path.name, f.path.stem)
                if n
            )
            for f in files
        )
        return WorkerInfo(os.getpid(), socket.gethostname(), str(self.engine.manager.precision.device), names)

    def refresh(self) -> WorkerInfo:
        self.engine.manager.refresh()
        return self.info()

    def control(self, job_id: str, cancel: bool, skips: int, drop: bool = False) -> bool:
        """Cancel (keeping the finished pictures; `drop`: keeping none, the job runs again) or skip the
        running job `job_id`; False when this worker does not run it."""
        with self._lock:
            token = self._tokens.get(job_id)
        if token is None:
            return False
        if drop:
            token.interrupt(keep_partial=False)
        token.apply(cancel, skips)
        return True

    def run(self, spec: JobSpec) -> Iterator[ProgressMsg | ImageMsg | DoneMsg]:
        self._settings = dict(spec.settings)  # the dispatcher sends one job at a time to an actor
        out: queue.Queue[Any] = queue.Queue()
        token = StoreCancelToken()
        with self._lock:
            self._tokens[spec.job_id] = token

        def place(img: GeneratedImage) -> JobImage:
            out.put(ImageMsg(png_bytes(img.image), img.seed, img.subseed, img.infotext))
            return JobImage("", img.seed, img.subseed, img.infotext)

        def send_copy(image: Any, seed: int, infotext: str) -> None:
            out.put(ImageMsg(png_bytes(image), seed, 0, infotext, copy=True))

        # copies before face restoration are made here only when the server will write them
        copies = bool(spec.settings.get("save_images_before_face_restoration")) and bool(
            spec.settings.get("samples_save", True)
        )
        outputs = OutputOptions(
            self._scratch,
            samples_save=False,
            grid_save=False,
            save_before_face_restoration=copies,
            send_copy=send_copy,
        )
        request = spec.request
        if isinstance(request, ExtrasRequest) and request.save_images:
            request = dataclasses.replace(request, save_images=False)  # the server writes them

        def work() -> None:
            try:
                outcome = execute(
                    self.engine,
                    request,
                    token,
                    results_dir=self._scratch,
                    report=_Sender(out),
                    preview_every=spec.preview_every,
                    outputs=outputs,
                    place=place,
                )
                warnings = tuple(dict.fromkeys(w for i in outcome.images for w in i.warnings))
                out.put(
                    DoneMsg(
                        outcome.model_title,
                        outcome.interrupted,
                        outcome.error,
                        outcome.error_field,
                        warnings,
                        outcome.output,
                    )
                )
            except BaseException as e:  # execute catches job failures; this is a bug: still say so
                log.exception("remote job %s", spec.job_id)
                out.put(DoneMsg(error=f"{type(e).__name__}: {e}"))
            finally:
                out.put(_END)

        thread = threading.Thread(target=work, name=f"sfumato-ray-{spec.job_id[:8]}", daemon=True)
        thread.start()
        try:
            while (msg := out.get()) is not _END:
                yield msg
        finally:
            token.interrupt(keep_partial=False)  # the server stopped listening: stop the run
            thread.join()
            with self._lock:
                self._tokens.pop(spec.job_id, None)
