"""The CPU levers side by side in one run: what each does to a denoiser step, a VAE decode and a whole job.

    python bench/cpu.py [--size 512] [--repeats 2] [--job-steps 4] [--no-job] [--smoke]

Module rows (SD1.5 shapes with random weights; a step is one UNet call on a batch of 2, the
classifier-free-guided pair; the decode is one latent): seconds (best of --repeats), speedup over fp32,
and the largest difference from the fp32 output.
- fp32: what the CPU runs by default.
- fp32 channels-last: the memory format alone (Sfumato does not use it in fp32 on the CPU: no gain).
- bf16: the weights in bfloat16, contiguous.
- bf16 channels-last: what `--precision bf16` runs (conv parts in channels-last).
- OpenVINO f32 / bf16: `openvino.convert_model` + compile for the CPU, when the openvino package is
  installed (it is not a dependency; these rows are the record of why: see the README).
- jemalloc: the fp32 step again in a child process started with LD_PRELOAD, when a libjemalloc is found
  (webui/jemalloc.py's search; `--jemalloc` in the app).
`--compile` (inductor) has its own bench: bench/compile.py.

Job rows: one txt2img job of --job-steps steps at --size through the real engine and loader, from a
random-weight SD1.5-size file: fp32 and `--precision bf16`, seconds, ratio, and the mean pixel difference.
`--smoke` uses the tiny demo model at 64 px (CI runs it: proof the script runs, not figures).
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webui import offline  # noqa: E402

offline.apply()


def best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of `repeats` calls (after one warm-up) and the last output."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def models(smoke: bool) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    if smoke:
        from webui.core.models.tiny import build_tiny

        tiny = build_tiny("sd1")
        return tiny.unet.float().eval(), tiny.vae.float().eval()
    from load import full_size_sd1

    full = full_size_sd1()
    return full.unet.float().eval(), full.vae.float().eval()  # type: ignore[attr-defined]


def module_rows(size: int, repeats: int, smoke: bool) -> list[tuple[str, str, float, float]]:
    """(part, variant, seconds, max |diff| from fp32) for the step and the decode."""
    import torch

    unet, vae = models(smoke)
    lat = size // 8
    x, t = torch.randn(2, 4, lat, lat), torch.tensor([500, 500])
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim)
    z = torch.randn(1, 4, lat, lat)

    def step(m: Any, dtype: torch.dtype) -> Callable[[], Any]:
        return lambda: m(x.to(dtype), t, encoder_hidden_states=ctx.to(dtype)).sample.float()

    def decode(m: Any, dtype: torch.dtype) -> Callable[[], Any]:
        return lambda: m.decode(z.to(dtype)).sample.float()

    rows = []
    for part, base, call in (("step", unet, step), ("decode", vae, decode)):
        ref: Any = None
        for variant, dtype, last in (
            ("fp32", torch.float32, False),
            ("fp32 channels-last", torch.float32, True),
            ("bf16", torch.bfloat16, False),
            ("bf16 channels-last (--precision bf16)", torch.bfloat16, True),
        ):
            m = copy.deepcopy(base).to(dtype)
            if last:
                m = m.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                seconds, out = best(call(m, dtype), repeats)
            ref = out if ref is None else ref
            rows.append((part, variant, seconds, float((out - ref).abs().max())))
            print(f"  {part} {variant}: {seconds:.2f} s", file=sys.stderr, flush=True)
        rows += openvino_rows(part, base, (x, t, ctx) if part == "step" else (z,), ref, repeats)
    return rows


def openvino_rows(part: str, module: Any, inputs: tuple[Any, ...], ref: Any, repeats: int) -> list[Any]:
    try:
        import openvino as ov
    except ImportError:
        return []
    import torch

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = module

        def forward(self, *a: Any) -> Any:
            if part == "step":
                return self.m(a[0], a[1], encoder_hidden_states=a[2], return_dict=False)[0]
            return self.m.decode(a[0], return_dict=False)[0]

    with torch.no_grad():
        graph = ov.convert_model(Plain(), example_input=inputs)
    rows = []
    for hint in ("f32", "bf16"):
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        arrays = tuple(i.numpy() for i in inputs)
        seconds, out = best(lambda c=compiled, a=arrays: c(a)[0], repeats)  # type: ignore[misc]
        rows.append((part, f"OpenVINO {hint}", seconds, float((torch.from_numpy(out) - ref).abs().max())))
    return rows


def jemalloc_step(size: int, repeats: int, smoke: bool) -> tuple[float, float] | str:
    """The fp32 step without and with jemalloc, each in a child process; or why it was not measured."""
    from webui import jemalloc

    lib = jemalloc.find()
    if lib is None:
        return "no libjemalloc found (Debian/Ubuntu: apt install libjemalloc2)"
    out = []
    for preload in ("", str(lib)):
        env = {**os.environ, "LD_PRELOAD": preload} if preload else dict(os.environ)
        args = [sys.executable, __file__, "--child-step", "--size", str(size), "--repeats", str(repeats)]
        done = subprocess.run(
            args + (["--smoke"] if smoke else []), env=env, capture_output=True, text=True, check=True
        )
        out.append(float(done.stdout.split()[-1]))
    return out[0], out[1]


def job_rows(size: int, steps: int, smoke: bool) -> list[tuple[str, float, Any]]:
    import numpy as np
    import torch

    from webui.core.config import AppConfig
    from webui.core.engine import Engine
    from webui.core.models.components import Precision
    from webui.core.models.manager import ModelManager
    from webui.core.types import Txt2ImgRequest

    rows = []
    with tempfile.TemporaryDirectory(prefix="sfumato-cpu-") as tmp:
        data = Path(tmp)
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        from gpu import MODELS, write_model

        name = write_model(MODELS["sd15"], folder, smoke, ROOT / "bench" / "results" / "gpu", 1.0)
        config = AppConfig.for_data_dir(data)
        request = Txt2ImgRequest(
            prompt="a lighthouse at dusk", width=size, height=size, steps=steps, seed=1, checkpoint=name,
            sampler_name="Euler", save_images=False,
        )  # fmt: skip
        for label, dtype in (("fp32", torch.float32), ("--precision bf16", torch.bfloat16)):
            manager = ModelManager(config, Precision("cpu", dtype, dtype))
            manager.refresh()
            engine = Engine(config, manager)
            engine.run(request)  # the load and a warm-up
            t0 = time.perf_counter()
            picture = np.asarray(engine.run(request).images[0].image, dtype=np.int16)
            rows.append((label, time.perf_counter() - t0, picture))
            print(f"  job {label}: {rows[-1][1]:.1f} s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=None, help="square picture size (default 512; --smoke 64)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--job-steps", type=int, default=4)
    p.add_argument("--no-job", action="store_true", help="module rows only")
    p.add_argument("--smoke", action="store_true", help="the tiny demo model at 64 px")
    p.add_argument("--child-step", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    size = args.size or (64 if args.smoke else 512)
    if size < 64 or size % 8 or args.repeats < 1 or args.job_steps < 1:
        p.error("--size: a multiple of 8 from 64; --repeats and --job-steps: at least 1")

    import torch

    if args.child_step:  # one fp32 step timing, for the jemalloc comparison
        unet, _ = models(args.smoke)
        lat = size // 8
        x, t = torch.randn(2, 4, lat, lat), torch.tensor([500, 500])
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim)
        with torch.inference_mode():
            print(best(lambda: unet(x, t, encoder_hidden_states=ctx).sample, args.repeats)[0])
        return

    from webui.core.devices import cpu_has_bf16

    hw = "AVX512-BF16/AMX" if cpu_has_bf16() else "no bf16 instructions"
    label = "tiny demo SD1 (smoke)" if args.smoke else "SD1.5 shapes, random weights"
    threads = torch.get_num_threads()
    print(f"bench/cpu.py: {label}, {size} px, torch {torch.__version__}, {threads} threads, {hw}")
    rows = module_rows(size, args.repeats, args.smoke)
    print(f"{'part':<8}{'variant':<40}{'seconds':>9}{'speedup':>9}{'max diff':>10}")
    base = {part: s for part, variant, s, _ in rows if variant == "fp32"}
    for part, variant, seconds, diff in rows:
        print(f"{part:<8}{variant:<40}{seconds:>9.3f}{base[part] / seconds:>9.2f}{diff:>10.2e}")
    jem = jemalloc_step(size, args.repeats, args.smoke)
    if isinstance(jem, str):
        print(f"step    jemalloc: not measured: {jem}")
    else:
        without, with_ = jem
        print(f"step    jemalloc (child processes): {without:.3f} s without, {with_:.3f} s with, "
              f"{without / with_:.2f}x")  # fmt: skip
    if not args.no_job:
        jobs = job_rows(size, args.job_steps, args.smoke)
        (_, fp32_s, fp32_px), (_, bf16_s, bf16_px) = jobs
        mean = float(abs(fp32_px - bf16_px).mean())
        print(f"job     {args.job_steps} steps + decode: fp32 {fp32_s:.1f} s, --precision bf16 "
              f"{bf16_s:.1f} s, {fp32_s / bf16_s:.2f}x; mean pixel difference {mean:.2f}/255")  # fmt: skip


if __name__ == "__main__":
    main()
