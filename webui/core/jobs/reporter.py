"""What a running job's worker reports (progress with previews, finished images), kept live in memory for
the job's readers and saved to the store now and then."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from webui.core.jobs.events import EventLog
from webui.core.jobs.info import JobImage, JobProgressInfo
from webui.core.jobs.running import PROGRESS_SAVE_INTERVAL, Running
from webui.core.jobs.store import JobStore


class JobReporter:
    """The worker.Reporter of one run: `remove_files` deletes the files of images made again."""

    def __init__(
        self,
        store: JobStore,
        events: EventLog,
        remove_files: Callable[[Sequence[JobImage]], Any],
        run: Running,
    ) -> None:
        self.store, self.events, self.remove_files, self.run = store, events, remove_files, run

    def progress(self, info: JobProgressInfo, preview_png: bytes | None) -> None:
        run = self.run
        run.progress = info
        now = time.monotonic()
        if now - run.saved_at >= PROGRESS_SAVE_INTERVAL or info.batch != run.saved_batch:
            self.store.set_progress(run.base.id, info.to_json(), worker=run.worker)
            run.saved_at, run.saved_batch = now, info.batch
        self.events.append(run.base.id, "progress", run.info(), preview_png)

    def images(self, images: Any) -> None:
        run = self.run
        run.images = tuple(images)
        # an image made again (same seed; same subseed too when variations are on) replaces the earlier
        # attempt's copy: one file, not two
        variations = bool(run.base.request.get("subseed_strength"))

        def key(i: JobImage) -> tuple[int, int]:
            return (i.seed, i.subseed if variations else 0)

        made = {key(i) for i in run.images}
        again = [i for i in run.earlier if key(i) in made]
        run.earlier = tuple(i for i in run.earlier if key(i) not in made)
        listed = [i.to_json() for i in (*run.images, *run.earlier)]  # nothing unlisted if killed now
        self.store.set_result(run.base.id, {"images": listed}, worker=run.worker)
        self.remove_files([i for i in again if i.path not in {n.path for n in run.images}])
        self.events.append(run.base.id, "image", run.info())
