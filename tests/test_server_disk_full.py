"""A full disk on a real server (tiny tmpfs mounts; skipped where this process may not mount): a job
that cannot save its images fails saying "disk full" with the place, and a submit whose job store is
full answers 507 saying so, not a bare 500 (issue 22 item 16)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_server_harness import running_server

FAST: dict[str, Any] = {"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": 1}


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "512k") -> Iterator[Path]:
    """`folder` as a tmpfs of `size`; skips the test when it cannot be mounted (not root, no rights)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write into `folder` until its disk is full (big pieces, then single bytes)."""
    fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for piece in (b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, piece)
    finally:
        os.close(fd)


def test_a_job_that_cannot_save_says_disk_full(tiny_data_dir: Path, tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "outputs") as outputs, running_server(tiny_data_dir, tmp_path) as srv:
        fill(outputs)
        with srv.client() as c:
            r = c.post("/api/v1/jobs", json={"request": FAST})
            assert r.status_code == 201, r.text
            info = srv.services.queue.wait(r.json()["id"], timeout=300)
            assert info.state.value == "failed"
            assert info.error.startswith("disk full while writing ") and str(outputs) in info.error, (
                info.error
            )
            shown = c.get(f"/api/v1/jobs/{info.id}").json()["error"]
            assert shown.startswith("disk full") and str(tmp_path) not in shown
            blocking = c.post("/sdapi/v1/txt2img", json={**FAST, "save_images": True})
            assert blocking.status_code == 500 and blocking.json()["detail"].startswith("disk full")


def test_a_full_job_store_answers_507_not_a_bare_500(tiny_data_dir: Path, tmp_path: Path) -> None:
    with (
        tiny_disk(tmp_path / "jobs", "256k") as jobs,
        running_server(tiny_data_dir, tmp_path, max_queued_per_user=0) as srv,
        srv.client() as c,
    ):
        fill(jobs)
        big = {**FAST, "prompt": "a cube, " * 1000, "steps": 1}
        statuses = []
        for _ in range(60):
            r = c.post("/api/v1/jobs", json={"request": big})
            statuses.append(r.status_code)
            if r.status_code != 201:
                break
        assert statuses[-1] == 507, (statuses, r.text)
        body = r.json()
        assert body["error"] == "DiskFull" and body["detail"].startswith(
            "disk full while writing jobs.sqlite"
        )
        assert c.get("/api/v1/health").status_code == 200  # reading still works
