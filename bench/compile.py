"""--compile against eager, side by side: the same engine request with the denoiser compiled or not.

    python bench/compile.py [--model sd1|sd15] [--sizes 64,128] [--steps 10] [--repeats 3]

Both engines share one model manager (the very same modules). Per size: the compiled engine's first run
(a cold compile: the compile cache is a fresh temporary folder), then eager and compiled runs alternating,
medians; printed: eager s, compiled s, speedup (eager / compiled) and the first compiled run's seconds.

Models: `sd1` (default) is the tiny random-weight SD1 demo model (`--demo-model sd1`): cheap on a CPU,
its figures show what compiling saves on the loop's many small kernels, not on a real UNet. `sd15` is a
random-weight file of the real SD1.5 shapes (bench/load.py's; its cold compile takes many minutes on a
CPU). On a GPU, `bench/gpu.py --compile` gives the full-size table.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webui import offline  # noqa: E402

offline.apply()

PROMPT = "a watercolor painting of a lighthouse at dusk, soft light"


@dataclass(frozen=True)
class CompileRow:
    model: str
    size: int
    steps: int
    eager: float  # median seconds per run
    compiled: float
    first: float  # the compiled engine's first run: compile + run
    note: str = ""  # a --compile warning (the compiled engine ran eager)


def _timed(engine: Any, request: Any) -> tuple[float, Any]:
    """Seconds of one engine run (GPU work finished: synchronized on CUDA), and its result."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = engine.run(request)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, result


def compare(
    data: Path, name: str, label: str, size: int, steps: int, repeats: int, **extra: Any
) -> CompileRow:
    """Eager vs compiled runs of checkpoint `name` in data folder `data` (its cache/ gets the compile)."""
    from webui.core.config import AppConfig
    from webui.core.devices import choose_precision
    from webui.core.engine import Engine
    from webui.core.models.manager import ModelManager
    from webui.core.types import Txt2ImgRequest

    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, choose_precision(config))
    manager.refresh()
    eager = Engine(config, manager)
    compiled = Engine(dataclasses.replace(config, compile=True), manager)
    fields: dict[str, Any] = dict(
        prompt=PROMPT, negative_prompt="blurry", checkpoint=name, width=size, height=size, steps=steps,
        seed=1234, sampler_name="Euler", save_images=False,
    )  # fmt: skip
    request = Txt2ImgRequest(**{**fields, **extra})
    eager.run(request)  # the load, and eager's warm-up
    first, result = _timed(compiled, request)
    note = next((w for w in result.warnings if w.startswith("--compile")), "")
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for side, engine in (("eager", eager), ("compiled", compiled)):
            times[side].append(_timed(engine, request)[0])
    return CompileRow(
        label,
        size,
        steps,
        statistics.median(times["eager"]),
        statistics.median(times["compiled"]),
        first,
        note,
    )


HEADER = (
    f"{'model':<11}{'size':>6}{'steps':>7}{'eager s':>10}{'compiled s':>12}{'speedup':>9}{'1st run s':>11}"
)


def format_row(r: CompileRow) -> str:
    line = (
        f"{r.model:<11}{r.size:>6}{r.steps:>7}{r.eager:>10.3f}{r.compiled:>12.3f}"
        f"{r.eager / r.compiled:>9.2f}{r.first:>11.1f}"
    )
    return f"{line}  ({r.note})" if r.note else line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["sd1", "sd15"], default="sd1", help="tiny demo SD1, or SD1.5 shapes")
    p.add_argument("--sizes", default="64,128", help="comma-separated square sizes (multiples of 8, from 64)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--work", type=Path, default=ROOT / "bench" / "results" / "gpu", help="--model sd15's file"
    )
    args = p.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes: whole numbers separated by commas, got {args.sizes!r}")
    if not sizes or any(s < 64 or s % 8 for s in sizes):
        p.error("--sizes: each size a multiple of 8, at least 64")
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats: at least 1")

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no CUDA)"
    print(f"bench/compile.py on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfumato-compile-") as tmp:
        data = Path(tmp)
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        if args.model == "sd1":
            from webui.core.models.demo import write_demo

            name, label = write_demo(data / "models", "sd1").stem, "tiny SD1"
        else:
            from gpu import MODELS, write_model

            name, label = write_model(MODELS["sd15"], folder, False, args.work, 1.0), "SD1.5"
        for size in sizes:
            rows.append(compare(data, name, label, size, args.steps, args.repeats))
            print(f"  {label} {size} px: done", file=sys.stderr, flush=True)
    print(HEADER)
    for r in rows:
        print(format_row(r))
    print(
        "speedup: eager seconds / compiled seconds (medians, alternating runs); 1st run: cold compile + run"
    )


if __name__ == "__main__":
    main()
