"""A job-queue process for the crash test: run jobs on a tiny model and report progress on stdout.

    python -m tests.jobs_helpers.crash_worker DATA_DIR DB_PATH submit   # queue the test's jobs, run
    python -m tests.jobs_helpers.crash_worker DATA_DIR DB_PATH resume   # recover and run what is left
    python -m tests.jobs_helpers.crash_worker DATA_DIR DB_PATH batch    # one slow job of three images

Prints one JSON line per event of the slow job ({"kind", "batch", "step", "attempts"}), and first a line
{"jobs": {...}} naming the job ids. The parent kills it with SIGKILL mid-job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from webui import offline

offline.apply()

from webui.core.config import AppConfig  # noqa: E402
from webui.core.engine import Engine  # noqa: E402
from webui.core.jobs import JobQueue  # noqa: E402
from webui.core.types import Txt2ImgRequest  # noqa: E402

FAST: dict[str, Any] = dict(width=64, height=64, checkpoint="tiny-sd1", sampler_name="Euler")


def main(data_dir: str, db_path: str, mode: str) -> None:
    config = AppConfig.for_data_dir(data_dir, outputs_dir=Path(db_path).parent / "outputs")
    queue = JobQueue(Engine(config), Path(db_path))
    jobs: dict[str, str] = {}
    if mode == "submit":
        jobs = {
            "slow": queue.submit(Txt2ImgRequest(prompt="slow", seed=7, steps=100, n_iter=40, **FAST), "a").id,
            "quick_b": queue.submit(Txt2ImgRequest(prompt="b", seed=8, steps=2, **FAST), "b").id,
            "quick_a": queue.submit(Txt2ImgRequest(prompt="a", seed=9, steps=2, **FAST), "a").id,
        }
    elif mode == "batch":  # one job of three images, for the re-run test
        jobs = {
            "slow": queue.submit(Txt2ImgRequest(prompt="slow", seed=7, steps=40, n_iter=3, **FAST), "a").id
        }
    print(json.dumps({"jobs": jobs}), flush=True)
    queue.start()
    slow = next(j.id for j in queue.list() if j.request["prompt"] == "slow")
    seq = 0
    while True:
        for event in queue.events(slow, seq, timeout=30):
            seq = event.seq
            p = event.info.progress
            line = {"kind": event.kind, "batch": p.batch, "step": p.step, "attempts": event.info.attempts}
            print(json.dumps(line), flush=True)
        if queue.get(slow).state.finished:
            break


if __name__ == "__main__":
    main(*sys.argv[1:4])
