"""A download job through the real job queue: a shutdown mid-transfer puts it back in the queue with its
part kept, and the next start resumes it with a Range request; downloads run beside generation, on the
queue's background worker."""

from __future__ import annotations

import time
from pathlib import Path

from tests.download_server import serving
from webui.core.config import AppConfig
from webui.core.downloads.fetch import staging_paths
from webui.core.downloads.request import DownloadRequest
from webui.core.engine import Engine
from webui.core.jobs import JobQueue, JobState


def test_a_restart_resumes_a_download_where_it_stopped(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    body = tiny_files["sd1"].read_bytes()
    config = AppConfig.for_data_dir(tmp_path / "data", download_hosts=("127.0.0.1",), hashing=False)
    engine = Engine(config)
    db = tmp_path / "jobs.sqlite"
    with serving() as s:
        s.files["/big.safetensors"] = body
        s.slow["/big.safetensors"] = 0.05
        request = DownloadRequest(url=s.base + "/big.safetensors")
        queue = JobQueue(engine, db)
        queue.start()
        job = queue.submit(request, "root")
        deadline = time.monotonic() + 30
        while queue.get(job.id).progress.bytes_done < (256 << 10):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        queue.close(timeout=0.5)  # the server stops: the running download is interrupted, not cancelled
        part, _ = staging_paths(config, request)
        kept = part.stat().st_size
        assert 0 < kept < len(body)
        s.slow.clear()
        again = JobQueue(engine, db)
        assert again.get(job.id).state is JobState.QUEUED
        again.start()
        info = again.wait(job.id, timeout=60)
        again.close()
        ranges = s.ranges("/big.safetensors")
    assert info.state is JobState.DONE, info.error
    assert info.output is not None and info.output["path"] == "models/Stable-diffusion/big.safetensors"
    assert (config.ckpt_dirs[0] / "big.safetensors").read_bytes() == body
    assert ranges[0] == "" and ranges[-1].startswith("bytes=") and int(ranges[-1][6:-1]) >= kept
    assert not part.exists()
