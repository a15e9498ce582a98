"""Server figures: cold start, job-queue overhead, and a 10,000-checkpoint library.

    python bench/server.py [--repeats 5] [--files 10000] [--skip-start] [--threads 1]

- Cold start (reference/performance.md, figure 3): `launch.py --skip-install` in a fresh process until
  the studio page answers 200, with and without the UI (`--nowebui`), on a data folder holding the demo
  model. No model is loaded to serve the page.
- Queue overhead (figure 5), in one process with the real server on 127.0.0.1 and the tiny SD1 model:
  the same txt2img request run by `Engine.run` directly and through HTTP (POST /api/v1/jobs, the SSE
  event stream, GET the image), alternated; prints medians, the extra time per job, submit -> first
  progress event, and done event -> PNG received.
- Library scale (figure 6): 10,000 checkpoint files (headers only, no weights): the registry scan and
  GET /sdapi/v1/sd-models.
Prints figures; never passes or fails on time. Machines here are shared and noisy: trust the ratios.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

REQUEST = dict(prompt="a lighthouse at dusk", steps=8, width=64, height=64, seed=1, cfg_scale=7.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cold_start(data: Path, ui: bool) -> float:
    import httpx

    port = _free_port()
    args = [
        sys.executable,
        str(ROOT / "launch.py"),
        "--skip-install",
        "--data-dir",
        str(data),
        "--port",
        str(port),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*args, *([] if ui else ["--nowebui"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("launch.py exited early")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)


def queue_overhead(data: Path, work: Path, repeats: int) -> None:
    import httpx

    from tests.test_server_harness import running_server
    from webui.core.types import Txt2ImgRequest

    # previews every 5 steps, as the app runs (the test harness asks for one every step)
    with (
        running_server(data, work, flags=[], preview_every=5) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        engine = srv.services.engine
        direct, http, first_event, fetch = [], [], [], []
        engine.run(Txt2ImgRequest(**REQUEST))  # warm both paths
        _http_job(c, first_event, fetch)
        first_event.clear()
        fetch.clear()
        for _ in range(repeats):
            t = time.perf_counter()
            engine.run(Txt2ImgRequest(**REQUEST))  # saves its PNG too, as every job does
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            _http_job(c, first_event, fetch)
            http.append(time.perf_counter() - t)
    d, h = statistics.median(direct), statistics.median(http)
    print(f"queue overhead, tiny SD1 64 px {REQUEST['steps']} steps, {repeats} alternated pairs:")
    print(f"  Engine.run {d * 1000:.1f} ms, through HTTP + queue + SSE + image fetch {h * 1000:.1f} ms")
    print(f"  extra per job {(h - d) * 1000:.1f} ms (ratio {h / d:.3f})")
    print(f"  submit -> first progress event {statistics.median(first_event) * 1000:.1f} ms")
    print(f"  done event -> PNG received {statistics.median(fetch) * 1000:.1f} ms")


def _http_job(c, first_event: list[float], fetch: list[float]) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    job = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": REQUEST}).json()
    seen_progress = False
    with c.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "progress" and not seen_progress:
                    first_event.append(time.perf_counter() - start)
                    seen_progress = True
            elif line.startswith("data:") and event in ("done", "failed", "cancelled"):
                done_at = time.perf_counter()
                assert event == "done", line
                c.get(f"/api/v1/jobs/{job['id']}/images/0").raise_for_status()
                fetch.append(time.perf_counter() - done_at)
                return


def library(work: Path, files: int) -> None:
    import httpx

    from tests.test_server_harness import running_server

    ckpts = work / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    blob = len(header).to_bytes(8, "little") + header
    t = time.perf_counter()
    for i in range(files):  # in subfolders of 1,000, as big libraries are organised
        folder = ckpts / f"{i // 1000:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"model-{i:05d}.safetensors").write_bytes(blob)
    print(f"library: wrote {files} header-only checkpoint files in {time.perf_counter() - t:.2f} s")
    with running_server(work, work / "srv", flags=["--api", "--no-hashing"]) as srv:
        t = time.perf_counter()
        srv.services.manager.refresh()
        scan = time.perf_counter() - t
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            t = time.perf_counter()
            listed = c.get("/sdapi/v1/sd-models").json()
            api = time.perf_counter() - t
    print(f"  registry scan {scan * 1000:.0f} ms; GET /sdapi/v1/sd-models {api * 1000:.0f} ms", end="")
    print(f" ({len(listed)} entries)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--skip-start", action="store_true", help="skip the cold-start figures")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from webui.core.models.tiny import ARCHES, build_tiny, save_single_file, write_demo_checkpoint

    with tempfile.TemporaryDirectory(prefix="sfumato-bench-") as tmp:
        root = Path(tmp)
        if not a.skip_start:
            demo = root / "demo"
            write_demo_checkpoint(demo / "models")
            for ui in (False, True):
                times = [cold_start(demo, ui) for _ in range(3)]
                what = "with the UI" if ui else "API only (--nowebui)"
                print(
                    f"cold start {what}: launch.py -> page answers, median {statistics.median(times):.2f} s"
                )
        data = root / "data"
        (data / "models" / "Stable-diffusion").mkdir(parents=True)
        assert "sd1" in ARCHES
        save_single_file(
            build_tiny("sd1", seed=0), data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
        )
        queue_overhead(data, root / "work", a.repeats)
        library(root / "lib", a.files)


if __name__ == "__main__":
    main()
