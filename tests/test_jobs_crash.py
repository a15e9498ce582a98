"""kill -9 mid-job, twice, then restart: every job ends visibly, and every image listed exists."""

from __future__ import annotations

import json
import os
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.netguard import sitecustomize as netguard
from webui import offline
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.jobs import JobQueue, JobState

ROOT = Path(__file__).resolve().parents[1]


def _run_until_killed(args: list[str], until: Any, timeout: float = 240) -> list[dict[str, Any]]:
    """Start the worker process, read its JSON lines until `until(line)`, then SIGKILL it."""
    env = netguard.child_env(dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    offline.apply(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobs_helpers.crash_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue_mod.Queue[str | None] = queue_mod.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if line is None:
                err = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"worker exited early (rc {proc.wait()}): {err[-3000:]}")
            seen.append(json.loads(line))
            if until(seen[-1]):
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.slow
def test_kill_9_twice_then_restart_finishes_or_fails_every_job(tiny_data_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    args = [str(tiny_data_dir), str(db)]

    # 1st process: a slow job (owner a), then quick jobs of b and a; killed in the slow job's 2nd batch
    seen = _run_until_killed([*args, "submit"], lambda e: e.get("batch", 0) >= 2)
    jobs = seen[0]["jobs"]
    assert any(e.get("kind") == "started" and e["attempts"] == 1 for e in seen)
    outputs = tmp_path / "outputs" / "txt2img-images"
    assert len(list(outputs.rglob("*.png"))) >= 1  # batch 1 was saved before the kill

    # 2nd process: the slow job is re-queued (attempt 2); b never ran, so b's quick job goes first
    seen = _run_until_killed([*args, "resume"], lambda e: e.get("batch", 0) >= 2)
    assert any(e.get("kind") == "started" and e["attempts"] == 2 for e in seen)

    # 3rd start, in this process: the slow job has used its two attempts and fails with the reason
    engine = Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path / "outputs"))
    q = JobQueue(engine, db)
    q.start()
    slow = q.wait(jobs["slow"], timeout=120)
    assert slow.state is JobState.FAILED and slow.error == "interrupted by a restart (attempt 2)"
    assert slow.attempts == 2
    quick_b = q.wait(jobs["quick_b"], timeout=120)
    quick_a = q.wait(jobs["quick_a"], timeout=120)
    assert quick_b.state is JobState.DONE and quick_a.state is JobState.DONE
    assert quick_b.attempts == 1 and quick_b.finished is not None
    assert quick_b.started is not None and slow.started is not None
    assert quick_b.started < slow.started  # the 2nd process ran b's queued job, then the slow one again
    assert [i.seed for i in quick_b.images] == [8] and [i.seed for i in quick_a.images] == [9]
    everyone = q.list()
    assert {j.id for j in everyone} == set(jobs.values())
    assert all(j.state.finished for j in everyone)
    for job in everyone:
        for img in job.images:  # every image listed on a job is on disk, whole
            with Image.open(img.path) as im:
                im.load()
                assert im.info["parameters"] == img.infotext
    q.close()


def test_a_rerun_after_kill_9_leaves_no_unlisted_images(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Issue 22 item 25: the first attempt's images are replaced as the re-run makes them again, so the
    outputs hold exactly the images the finished job lists."""
    db = tmp_path / "jobs.sqlite"
    seen = _run_until_killed([str(tiny_data_dir), str(db), "batch"], lambda e: e.get("batch", 0) >= 2)
    job_id = seen[0]["jobs"]["slow"]
    outputs = tmp_path / "outputs"
    images = outputs / "txt2img-images"
    first = sorted(images.rglob("*.png"))
    assert len(first) >= 1  # batch 1 was saved before the kill
    engine = Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=outputs))
    q = JobQueue(engine, db)
    try:
        assert [i.path for i in q.get(job_id).images] == [str(p) for p in first]  # listed while queued again
        q.start()
        done = q.wait(job_id, timeout=300)
        assert done.state is JobState.DONE and done.attempts == 2
        listed = sorted(Path(i.path) for i in done.images)
        assert len(listed) == 3 and [i.seed for i in done.images] == [7, 8, 9]
        on_disk = sorted(images.rglob("*.png"))
        assert on_disk == listed, (on_disk, listed)  # nothing unlisted, nothing listed that is gone
        assert done.grid_path is not None and Path(done.grid_path).is_file()
        assert not any(p in listed for p in first)  # the first attempt's copies were replaced
    finally:
        q.close()
