"""A crowd of blocking A1111 clients and one browser-style client, against the real server.

    python bench/crowd.py [--clients 100] [--users 5] [--steps 4] [--threads 1]

Starts the server on 127.0.0.1 (tiny SD1 model, `--api`, one login per user), then `--clients` threads
each POST a blocking `/sdapi/v1/txt2img` as one of `--users` users, all at once, while a "browser" user
keeps asking the routes a page polls (job list, health, progress, options, model list). Prints how long
the browser's requests took (median, worst) while the crowd waited, whether every crowd request got
its image, and how fairly the jobs ran (the largest number of one user's jobs among any `--users`
jobs started in a row, 1 when perfectly round-robin). Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

BROWSER_ROUTES = (
    "/api/v1/jobs",
    "/api/v1/health",
    "/sdapi/v1/progress",
    "/sdapi/v1/options",
    "/sdapi/v1/sd-models",
)


def browse(url: str, stop: threading.Event, times: list[tuple[str, float]]) -> None:
    import httpx

    with httpx.Client(base_url=url, auth=("web", "pw"), timeout=120) as c:
        while not stop.is_set():
            for path in BROWSER_ROUTES:
                t = time.perf_counter()
                c.get(path).raise_for_status()
                times.append((path, time.perf_counter() - t))
            time.sleep(0.2)


def crowd(data: Path, work: Path, clients: int, users: int, steps: int) -> None:
    import httpx

    from tests.test_server_harness import running_server

    names = [f"user{i}" for i in range(users)]
    spec = ",".join(f"{n}:pw" for n in [*names, "web"])
    request = {"prompt": "a lighthouse", "steps": steps, "width": 64, "height": 64, "seed": 1}
    with running_server(data, work, flags=["--api", "--api-auth", spec], preview_every=5) as srv:
        times: list[tuple[str, float]] = []
        stop = threading.Event()

        def one(i: int) -> tuple[int, int]:
            with httpx.Client(base_url=srv.url, auth=(names[i % users], "pw"), timeout=3600) as c:
                r = c.post("/sdapi/v1/txt2img", json=request)
                return r.status_code, len(r.json().get("images", [])) if r.status_code == 200 else 0

        browser = threading.Thread(target=browse, args=(srv.url, stop, times), daemon=True)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(one, i) for i in range(clients)]
            browser.start()
            results = [f.result() for f in futures]
        took = time.perf_counter() - start
        stop.set()
        browser.join(30)
        jobs = sorted(srv.services.queue.list(limit=clients + 10), key=lambda j: j.started or 0)
    ok = sum(1 for status, n in results if status == 200 and n == 1)
    owners = [j.owner for j in jobs if j.started]
    worst_share = max(
        (max(owners[i : i + users].count(n) for n in names) for i in range(max(1, len(owners) - users))),
        default=0,
    )
    lat = [t for _, t in times]
    print(f"{clients} blocking txt2img clients ({users} users, {steps} steps at 64 px): {took:.1f} s")
    print(f"  answered with their image: {ok}/{clients}; statuses {sorted({s for s, _ in results})}")
    print(f"  fairness: at most {worst_share} job(s) of one user among any {users} started in a row")
    if lat:
        worst = max(times, key=lambda x: x[1])
        print(
            f"  browser client: {len(lat)} requests, median {statistics.median(lat) * 1000:.0f} ms, "
            f"worst {worst[1] * 1000:.0f} ms ({worst[0]}), over 1 s: {sum(t > 1 for t in lat)}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from webui.core.models.tiny import build_tiny, save_single_file

    with tempfile.TemporaryDirectory(prefix="sfumato-crowd-") as tmp:
        data = Path(tmp) / "data"
        (data / "models" / "Stable-diffusion").mkdir(parents=True)
        save_single_file(
            build_tiny("sd1", seed=0), data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
        )
        crowd(data, Path(tmp) / "work", a.clients, a.users, a.steps)


if __name__ == "__main__":
    main()
