"""Scale-out: job throughput with 1 and 2 in-process workers and with 2 Ray actors, on the same jobs.

    python bench/scale.py [--jobs N] [--size PX] [--steps N] [--calls N]

Every mode runs the same N txt2img jobs of the tiny SD1 model (written to a temporary data folder)
through the real job queue (SQLite store, leases, images written by the server process), after one
warm-up job per worker so that each holds the model. Workers are single-threaded (torch threads 1; the
Ray actors get `--ray-threads 1`), so two workers can use two cores. Throughput = jobs / wall seconds;
ratios are against one in-process worker, side by side. Then the Ray actor call overhead: the mean round
trip of a small call to an actor (`--calls` of them), what each job pays on top of its streamed
messages. The local Ray cluster listens on 127.0.0.1 only.

Target (issue 18): 2 workers >= 1.8x where the machine has two free cores or devices; dispatch overhead
<= 20 ms per job. Shared machines are noisy: trust the ratios of one run more than its seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

from webui.core.config import AppConfig  # noqa: E402
from webui.core.engine import Engine  # noqa: E402
from webui.core.jobs import JobQueue, JobState  # noqa: E402
from webui.core.models.components import Precision  # noqa: E402
from webui.core.models.manager import ModelManager  # noqa: E402
from webui.core.models.tiny import build_tiny, save_single_file  # noqa: E402
from webui.core.types import Txt2ImgRequest  # noqa: E402


def _request(seed: int, size: int, steps: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(
        prompt="a red apple on a table", seed=seed, width=size, height=size, steps=steps,
        checkpoint="tiny-sd1", sampler_name="Euler",
    )  # fmt: skip


def _throughput(queue: JobQueue, workers: int, args: argparse.Namespace) -> float:
    """Jobs per second over args.jobs jobs, after a warm-up job per worker."""
    queue.start()
    try:
        warm = [queue.submit(_request(10_000 + n, args.size, args.steps), "warm") for n in range(workers)]
        for job in warm:
            assert queue.wait(job.id, 900).state is JobState.DONE
        start = time.perf_counter()
        owners = ("alice", "bob", "carol")
        jobs = [queue.submit(_request(n, args.size, args.steps), owners[n % 3]) for n in range(args.jobs)]
        infos = [queue.wait(job.id, 3600) for job in jobs]
        seconds = time.perf_counter() - start
        bad = [i.error for i in infos if i.state is not JobState.DONE]
        if bad:
            raise SystemExit(f"jobs failed: {bad[:3]}")
        return args.jobs / seconds
    finally:
        queue.close(timeout=60)


def _in_process(config: AppConfig, workers: int, db: Path, args: argparse.Namespace) -> float:
    lock = threading.Lock()
    engines = []
    for _ in range(workers):
        manager = ModelManager(config, Precision(), load_lock=lock)
        manager.refresh()
        engines.append(Engine(config, manager))
    return _throughput(JobQueue(engines[0], db, workers=engines), workers, args)


def _ray(config: AppConfig, db: Path, args: argparse.Namespace) -> tuple[float, float]:
    from webui.core.jobs.ray_pool import RayOptions, RayPool

    pool = RayPool.open(config, RayOptions(local=2, threads=1))
    try:
        ray, actor = pool.cluster.ray, pool.workers[0].actor
        ray.get([actor.control.remote("none", False, 0) for _ in range(10)])
        start = time.perf_counter()
        for _ in range(args.calls):
            ray.get(actor.control.remote("none", False, 0))
        call_ms = (time.perf_counter() - start) / args.calls * 1000
        rate = _throughput(JobQueue(Engine(config), db, remote_workers=pool.workers), 2, args)
    finally:
        pool.close()
    return rate, call_ms


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="sfumato-scale-") as tmp:
        data = Path(tmp) / "data"
        (data / "models" / "VAE").mkdir(parents=True)
        ckpts = data / "models" / "Stable-diffusion"
        ckpts.mkdir()
        save_single_file(build_tiny("sd1", seed=0), ckpts / "tiny-sd1.safetensors")
        config = AppConfig.for_data_dir(data, outputs_dir=Path(tmp) / "outputs")
        print(f"{args.jobs} jobs, tiny SD1, {args.size} px, {args.steps} steps; single-thread workers")
        results: dict[str, Any] = {}
        results["in-process, 1 worker"] = _in_process(config, 1, Path(tmp) / "one.sqlite", args)
        results["in-process, 2 workers"] = _in_process(config, 2, Path(tmp) / "two.sqlite", args)
        results["Ray, 2 actors"], call_ms = _ray(config, Path(tmp) / "ray.sqlite", args)
    base = results["in-process, 1 worker"]
    print(f"{'mode':<24}{'jobs/s':>9}{'vs 1 worker':>13}")
    for name, rate in results.items():
        print(f"{name:<24}{rate:>9.3f}{rate / base:>12.2f}x")
    print(f"Ray actor call round trip: {call_ms:.2f} ms (mean of {args.calls})")


if __name__ == "__main__":
    main()
