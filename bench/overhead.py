"""Engine overhead: our txt2img wall time / diffusers' own StableDiffusionPipeline, same job.

    python bench/overhead.py [--repeats N] [--skip-large] [--threads N] [--work DIR] [--profile]

"Ours" is the full public path, `Engine(AppConfig.for_data_dir(D)).run(Txt2ImgRequest(...,
save_images=False))`: validation, seed resolution, model look-up and pinning, prompt encoding, a fresh
scheduler, seeded noise, the CFG loop, VAE decode, PIL conversion and infotext. "Theirs" is
`StableDiffusionPipeline(...)(prompt, negative_prompt="", output_type="pil", generator=...)` built once
from the very module objects the engine holds (`engine.manager.acquire().components`), with its
progress bar off and a fresh scheduler per run from `make_scheduler` (the engine's own recipe, Euler),
so both time prompt encoding, the loop, the decode and the conversion to PIL. Same seed, size, steps
and CFG scale; the two images are compared (max pixel difference) as a check that the jobs are equal.

Each case warms both up once, then alternates them in one process (ours, theirs, ours, theirs, ...)
and prints medians, the ratio of medians and the spread (min..max) of the per-pair ratios. Machines
here are shared and noisy: trust the ratio, not the seconds. The PNG save (`save_images=True`'s extra
work: encode, atomic write, fsync) is timed on its own, after the loop.

Cases: the tiny SD1 fixture at 64 and 256 px, 20 steps (5 repeats: almost all overhead, little
compute), and an SD1.5-size random-weight checkpoint at 256 px, 4 steps (3 repeats; minutes on a CPU;
with 3 pairs one disturbed run moves the median, so rerun with `--repeats 5` before acting on a figure
over target).
The large file is bench/load.py's (`--work`, default bench/results/load/sd15-size-random.safetensors),
written there first if missing (~4.3 GB) and linked, not copied, into the temporary data folder.

Threads: one torch thread by default (`--threads N`; 0 keeps torch's default, one per core). On a shared
machine whose cores are busy with other work, more threads than free cores make OpenMP spin-wait: runs
get 5-25x slower and so erratic that alternated pairs disagree by 10x. The ratio is what counts, and
both sides run the same kernels; on a quiet machine `--threads 0` gives faster compute, against which a
fixed per-run overhead weighs more (the stricter figure).

Target: ratio <= 1.02 (docs: reference/performance.md, figure 1). `--profile` also prints a cProfile
of one extra run of each, per case (top functions by own time), to find where any excess goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

PROMPT = "a watercolor painting of a lighthouse at dusk, soft light"
SEED = 1234
CFG = 7.0
SAMPLER = "Euler"


@dataclass(frozen=True)
class Case:
    name: str
    file: Path
    size: int
    steps: int
    repeats: int


@dataclass(frozen=True)
class Row:
    case: Case
    ours: list[float]
    theirs: list[float]
    max_pixel_diff: int
    save_s: float
    device: str  # where and in what dtype the engine ran the UNet: "cpu float32"

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)

    @property
    def pair_ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.theirs, strict=True)]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tiny_file(folder: Path) -> Path:
    from webui.core.models.tiny import build_tiny, save_single_file

    return save_single_file(build_tiny("sd1"), folder / "tiny-sd1.safetensors")


def large_file(work: Path) -> Path:
    """bench/load.py's SD1.5-size random-weight checkpoint, written once and reused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sfumato_bench_load", ROOT / "bench" / "load.py")
    assert spec is not None and spec.loader is not None
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    big = work / "sd15-size-random.safetensors"
    if not big.exists():
        load.make_files(work, large=True)
    return big


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _profile(label: str, fn: Callable[[], Any], top: int = 25) -> None:
    prof = cProfile.Profile()
    prof.runcall(fn)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile, {label} (by own time) ---\n{buf.getvalue()}", flush=True)


def run_case(case: Case, profile: bool) -> Row:
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from webui.core.config import AppConfig
    from webui.core.engine import Engine
    from webui.core.outputs.saving import save_image
    from webui.core.sampling.samplers import make_scheduler
    from webui.core.types import Txt2ImgRequest

    with tempfile.TemporaryDirectory(prefix="sfumato-overhead-") as tmp:
        data = Path(tmp)
        ckpt_dir = data / "models" / "Stable-diffusion"
        ckpt_dir.mkdir(parents=True)
        (ckpt_dir / case.file.name).symlink_to(case.file.resolve())
        engine = Engine(AppConfig.for_data_dir(data))
        request = Txt2ImgRequest(
            prompt=PROMPT,
            negative_prompt="",
            steps=case.steps,
            width=case.size,
            height=case.size,
            seed=SEED,
            cfg_scale=CFG,
            sampler_name=SAMPLER,
            save_images=False,
        )
        with engine.manager.acquire() as model:  # loads (and hashes) once, outside the timings
            parts = model.components
            pipe = StableDiffusionPipeline(
                vae=parts.vae,
                text_encoder=parts.text_encoder,
                tokenizer=parts.tokenizer,
                unet=parts.unet,
                scheduler=make_scheduler(SAMPLER, request.scheduler, parts.scheduler_config),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)

            def ours() -> Any:
                return engine.run(request).images[0].image

            def theirs() -> Any:
                pipe.scheduler = make_scheduler(
                    SAMPLER, request.scheduler, parts.scheduler_config, noise_seeds=[SEED]
                )
                vae_dtype = next(pipe.vae.parameters()).dtype
                split = vae_dtype != next(pipe.unet.parameters()).dtype  # fp16 UNet, fp32 VAE (force_upcast)
                out = pipe(
                    PROMPT,
                    negative_prompt="",
                    height=case.size,
                    width=case.size,
                    num_inference_steps=case.steps,
                    guidance_scale=CFG,
                    generator=torch.Generator("cpu").manual_seed(SEED),
                    output_type="latent" if split else "pil",
                ).images
                if not split:
                    return out[0]
                # StableDiffusionPipeline cannot decode fp16 latents with an fp32 VAE; do what its SDXL
                # sibling does when it upcasts: cast the latents, decode, postprocess.
                with torch.no_grad():
                    image = pipe.vae.decode(out.to(vae_dtype) / pipe.vae.config.scaling_factor).sample
                return pipe.image_processor.postprocess(image, output_type="pil")[0]

            img_ours, img_theirs = ours(), theirs()  # warm-up
            diff = np.abs(np.asarray(img_ours, np.int16) - np.asarray(img_theirs, np.int16))
            ours_s: list[float] = []
            theirs_s: list[float] = []
            for _ in range(case.repeats):
                ours_s.append(_timed(ours)[0])
                theirs_s.append(_timed(theirs)[0])
            result = engine.run(request)
            image = result.images[0]
            out_dir = data / "outputs" / "bench"
            save_s = statistics.median(
                _timed(lambda: save_image(image.image, out_dir, image.seed, image.infotext))[0]
                for _ in range(max(case.repeats, 3))
            )
            if profile:
                _profile(f"{case.name}, ours", ours)
                _profile(f"{case.name}, diffusers", theirs)
    prec = engine.manager.precision
    device = f"{prec.device} {str(prec.dtype).removeprefix('torch.')}"
    return Row(case, ours_s, theirs_s, int(diff.max()), save_s, device)


def print_header() -> None:
    import diffusers
    import torch

    print(
        f"machine: {cpu_model()}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"diffusers {diffusers.__version__}, python {platform.python_version()}"
    )
    print(f"job: txt2img, {SAMPLER}, CFG {CFG}, seed {SEED}, batch 1; target ratio <= 1.02")
    print(
        f"{'case':30} {'N':>2} {'ours s':>9} {'diffusers s':>12} {'ratio':>7} {'pair ratios':>15} "
        f"{'max px diff':>11} {'PNG save s':>10}  device",
        flush=True,
    )


def print_row(row: Row) -> None:
    pr = row.pair_ratios
    print(
        f"{row.case.name:30} {len(row.ours):2} {statistics.median(row.ours):9.3f} "
        f"{statistics.median(row.theirs):12.3f} {row.ratio:7.3f} {min(pr):7.3f}..{max(pr):.3f} "
        f"{row.max_pixel_diff:11} {row.save_s:10.4f}  {row.device}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, help="pairs per case (default: 5 tiny, 3 large)")
    ap.add_argument("--skip-large", action="store_true", help="only the tiny fixture")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "load")
    ap.add_argument("--profile", action="store_true", help="also cProfile one run of each, per case")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default (see above)")
    args = ap.parse_args()

    import torch  # import cost outside every timing

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="sfumato-tiny-") as tmp:
        tiny = tiny_file(Path(tmp))
        n_tiny = args.repeats or 5
        cases = [
            Case("tiny sd1, 64 px, 20 steps", tiny, 64, 20, n_tiny),
            Case("tiny sd1, 256 px, 20 steps", tiny, 256, 20, n_tiny),
        ]
        if not args.skip_large:
            cases.append(
                Case("SD1.5-size, 256 px, 4 steps", large_file(args.work), 256, 4, args.repeats or 3)
            )
        rows = []
        print_header()
        for case in cases:
            row = run_case(case, args.profile)
            gc.collect()  # the case's engine and pipeline, before the next loads its model
            rows.append(row)
            if not args.profile:
                print_row(row)
        if args.profile:  # the profiles interleave with the table otherwise
            print_header()
            for row in rows:
                print_row(row)


if __name__ == "__main__":
    main()
