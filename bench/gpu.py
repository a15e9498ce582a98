"""Our engine against diffusers' own pipeline on the same modules: batch 1 and batch 8, side by side.

    python bench/gpu.py [--smoke] [--models sd15,sdxl,flux] [--batches 1,8] [--repeats 3] [--work DIR]
                        [--flux-depth 1] [--modes none,medvram,lowvram] [--hires SCALE] [--compile]

For each model it runs txt2img through the public path, `Engine(...).run(Txt2ImgRequest(batch_size=B))`,
and the matching diffusers pipeline (StableDiffusionPipeline, StableDiffusionXLPipeline, FluxPipeline)
built from the very module objects the engine holds, with the same sampler (Euler), size, steps and
guidance; warm-up first, then alternating runs, medians. Printed per model and batch size: seconds per
batch, images/s and it/s (steps per second of the whole batch) for each, the time ratio ours/theirs, and
on CUDA the peak GPU memory of each (torch.cuda.max_memory_allocated).

Models: random-weight files of the real shapes, written once into `--work` (default
bench/results/gpu; built on the GPU when there is one, stored in fp16): SD1.5 (512 px, 20 steps;
bench/load.py's shapes), SDXL (1024 px, 20 steps) and Flux.1 dev (1024 px, 20 steps; bf16, its
transformer's depth scaled by `--flux-depth` when a full 24 GB file would not fit). `--smoke` runs the
tiny demo models instead (64 px, 2 steps, one repeat) on whatever device there is, so CI proves the
script runs: its figures measure nothing but overhead.

A second table runs our engine alone at batch 1 in each VRAM mode (`--modes`: none, i.e. whole models on
the GPU, then --medvram and --lowvram; models.offload), optionally with hires fix (`--hires 1.5`):
seconds, the time against mode none, peak GPU memory (on CUDA) and how many moves the offloader made.
On the CPU (`--smoke` here) the offloader moves parts between the CPU and itself: the time then shows
the bookkeeping's cost, not a transfer's, and there is no VRAM to show.

With `--compile`, a third table: each model at batch 1 through our engine eager and with `--compile`
(bench/compile.py's comparison: alternating runs, medians), the speedup, and the first compiled run's
seconds (a cold compile: the compile cache starts empty).

Rows are printed as they are measured (a run cut short keeps its rows); `--batches ''` skips the first
table, `--modes ''` the second. bench/device/run.sh runs this on a lent GPU machine, time-boxed.

Targets (issue 17, on an H100/H200-class GPU): batch-8 ratio <= 1.05. The engine batches on a GPU
(`--batch-mode auto`) and goes image by image on the CPU, so on the CPU batch 8 costs ~8x batch 1.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webui import offline  # noqa: E402

offline.apply()

PROMPT = "a watercolor painting of a lighthouse at dusk, soft light"
SEED = 1234
GiB = 2**30


@dataclass(frozen=True)
class Model:
    key: str  # sd15 | sdxl | flux
    label: str
    demo: str  # the --demo-model name standing in for it in --smoke
    size: int
    steps: int
    cfg: float


MODELS = {
    "sd15": Model("sd15", "SD1.5", "sd1", 512, 20, 7.0),
    "sdxl": Model("sdxl", "SDXL", "sdxl", 1024, 20, 7.0),
    "flux": Model("flux", "Flux.1 dev", "flux", 1024, 20, 1.0),
}


@dataclass(frozen=True)
class ModeRow:
    model: str
    mode: str
    seconds: float
    vram: int | None
    moves: int


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    steps: int
    ours: float
    theirs: float
    vram_ours: int | None
    vram_theirs: int | None


# ---- random-weight files of the real shapes ---------------------------------------------------------


def _full_sdxl() -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from webui.core.models.configs import load_component_config
    from webui.core.models.tiny import TinyModel

    def text(name: str) -> Any:
        return CLIPTextConfig(
            **{k: v for k, v in load_component_config("sdxl", name).items() if k != "architectures"}
        )

    return TinyModel(
        arch="sdxl",
        unet=UNet2DConditionModel.from_config(load_component_config("sdxl", "unet")).eval(),
        vae=AutoencoderKL.from_config(load_component_config("sdxl", "vae")).eval(),
        text_encoder=CLIPTextModel(text("text_encoder")).eval(),
        text_encoder_2=CLIPTextModelWithProjection(text("text_encoder_2")).eval(),
        scheduler_config=load_component_config("sdxl", "scheduler"),
    )


def _full_flux(depth: float) -> Any:
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from flow_sizes import official_config
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from webui.core.models.configs import load_component_config
    from webui.core.models.tiny_flow import SCHEDULERS, TinyFlowModel

    clip = {k: v for k, v in load_component_config("sd1", "text_encoder").items() if k != "architectures"}
    t5 = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu", is_encoder_decoder=False)  # fmt: skip  # T5-XXL encoder
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
        use_post_quant_conv=False, force_upcast=True, sample_size=1024,
    )  # fmt: skip
    modules = [
        FluxTransformer2DModel(**official_config("flux-dev", depth)),
        vae,
        CLIPTextModel(CLIPTextConfig(**clip)),
        T5EncoderModel(t5),
    ]
    for m in modules:
        m.to(torch.bfloat16).eval()
    transformer, vae, clip_l, t5_model = modules
    return TinyFlowModel("flux-dev", transformer, vae, clip_l, None, t5_model, dict(SCHEDULERS["flux-dev"]))


def build_device(cuda: bool) -> str:
    """Where the random-weight models are built before they are written."""
    return "cuda" if cuda else "cpu"


def _stored(model: Any) -> Any:
    """The model's modules in RAM, floating-point weights in fp16 (bf16 ones stay bf16), as a
    checkpoint file holds them: half the bytes to write and read of fp32."""
    import torch

    for value in vars(model).values():
        if isinstance(value, torch.nn.Module):
            first = next(value.parameters())
            value.to(device="cpu", dtype=torch.float16 if first.dtype == torch.float32 else first.dtype)
    return model


def write_model(model: Model, folder: Path, smoke: bool, work: Path, flux_depth: float) -> str:
    """Puts the model's file in `folder` (a data folder's models/Stable-diffusion); its name there."""
    from webui.core.models.demo import write_demo

    if smoke:
        return write_demo(folder.parents[1] / "models", model.demo).stem
    import torch

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{model.key}-size-random.safetensors"
    if not path.exists():
        print(f"writing a {model.label}-size random-weight file (once) to {path} ...", flush=True)
        # random init of billions of weights takes minutes on a CPU and seconds on a GPU
        with torch.device(build_device(torch.cuda.is_available())):
            if model.key == "sd15":
                from load import full_size_sd1

                from webui.core.models.tiny import save_single_file

                save_single_file(_stored(full_size_sd1()), path)
            elif model.key == "sdxl":
                from webui.core.models.tiny import save_single_file

                save_single_file(_stored(_full_sdxl()), path)
            else:
                from webui.core.models.tiny_flow import save, single_file

                save(single_file(_stored(_full_flux(flux_depth)), "comfy"), path)
    (folder / path.name).symlink_to(path.resolve())
    return path.stem


# ---- the two sides ----------------------------------------------------------------------------------


def _pipeline(parts: Any) -> Any:
    import diffusers

    from webui.core import families

    fam = families.of(parts)
    if fam.pipeline_class == "FluxPipeline":
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config)
        pipe = diffusers.FluxPipeline(
            scheduler, parts.vae, parts.text_encoder, parts.tokenizer, parts.text_encoder_3,
            parts.tokenizer_3, parts.transformer,
        )  # fmt: skip
    else:
        scheduler = diffusers.EulerDiscreteScheduler.from_config(parts.scheduler_config)
        common = dict(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                      unet=parts.unet, scheduler=scheduler)  # fmt: skip
        if parts.text_encoder_2 is not None:
            pipe = diffusers.StableDiffusionXLPipeline(
                text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2, **common
            )
        else:
            pipe = diffusers.StableDiffusionPipeline(
                safety_checker=None, feature_extractor=None, requires_safety_checker=False, **common
            )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def vae_takes_any_dtype(vae: Any) -> Iterator[None]:
    """While open, the VAE's entry layers cast their input to the VAE's own dtype. diffusers' SD1 and
    SDXL pipelines hand the VAE latents in the UNet's dtype (fp16 on a GPU), but the VAE they share
    with our engine runs in fp32 (`force_upcast`, models.components.vae_compute_dtype), and a conv
    refuses fp16 input with fp32 weights. diffusers' SDXL pipeline casts the same way when it upcasts
    an fp16 VAE itself; our engine's decode casts before the call, so this costs it nothing."""

    def cast(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        dtype = module.weight.dtype
        return tuple(a.to(dtype) if hasattr(a, "is_floating_point") and a.is_floating_point() else a
                     for a in args)  # fmt: skip

    entries = [m for m in (vae.post_quant_conv, vae.decoder.conv_in) if m is not None]
    handles = [m.register_forward_pre_hook(cast) for m in entries]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _measure(fn: Callable[[], Any], cuda: bool) -> tuple[float, int | None]:
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, (torch.cuda.max_memory_allocated() if cuda else None)


def run_model(model: Model, args: argparse.Namespace, size: int, steps: int, repeats: int) -> list[Row]:
    import torch

    from webui.core.config import AppConfig
    from webui.core.engine import Engine
    from webui.core.types import Txt2ImgRequest

    cuda = torch.cuda.is_available()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfumato-gpu-") as tmp:
        data = Path(tmp)
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        name = write_model(model, folder, args.smoke, args.work, args.flux_depth)
        engine = Engine(AppConfig.for_data_dir(data))
        flux = model.key == "flux"
        with engine.manager.acquire(name) as loaded:
            pipe = _pipeline(loaded.components)
            for batch in args.batches:
                request = Txt2ImgRequest(
                    prompt=PROMPT, negative_prompt="" if flux else "blurry", checkpoint=name, width=size,
                    height=size, steps=steps, seed=SEED, cfg_scale=model.cfg, sampler_name="Euler",
                    scheduler="Simple" if flux else "Automatic", batch_size=batch, save_images=False,
                    **({"distilled_cfg_scale": 3.5} if flux else {}),
                )  # fmt: skip
                call: dict[str, Any] = dict(
                    prompt=PROMPT, height=size, width=size, num_inference_steps=steps,
                    num_images_per_prompt=batch, generator=torch.Generator("cpu").manual_seed(SEED),
                    guidance_scale=3.5 if flux else model.cfg,
                )  # fmt: skip
                if not flux:
                    call["negative_prompt"] = "blurry"

                def ours(r: Txt2ImgRequest = request) -> Any:
                    return engine.run(r)

                def theirs(c: dict[str, Any] = call) -> Any:
                    with vae_takes_any_dtype(pipe.vae):
                        return pipe(**c)

                ours(), theirs()  # warm-up
                times: dict[str, list[float]] = {"ours": [], "theirs": []}
                peaks: dict[str, int | None] = {"ours": None, "theirs": None}
                for _ in range(repeats):
                    for side, fn in (("ours", ours), ("theirs", theirs)):
                        seconds, peak = _measure(fn, cuda)
                        times[side].append(seconds)
                        if peak is not None:
                            peaks[side] = max(peaks[side] or 0, peak)
                rows.append(
                    Row(model.label, batch, steps, statistics.median(times["ours"]),
                        statistics.median(times["theirs"]), peaks["ours"], peaks["theirs"])
                )  # fmt: skip
                print(format_row(rows[-1]), flush=True)  # as it comes: a run cut short keeps its rows
                print(f"  {model.label} batch {batch}: done", file=sys.stderr, flush=True)
    return rows


def run_modes(model: Model, args: argparse.Namespace, size: int, steps: int, repeats: int) -> list[ModeRow]:
    """Batch 1 of `model` through our engine in each VRAM mode; each mode in a fresh model manager (the
    previous one's models freed first, so the peak is this mode's alone)."""
    import dataclasses
    import functools
    import gc

    import torch

    from webui.core.config import AppConfig
    from webui.core.devices import choose_precision
    from webui.core.engine import Engine
    from webui.core.models.manager import ModelManager
    from webui.core.models.offload import Offloader
    from webui.core.types import Txt2ImgRequest

    cuda = torch.cuda.is_available()
    flux = model.key == "flux"
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfumato-vram-") as tmp:
        data = Path(tmp)
        folder = data / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        name = write_model(model, folder, args.smoke, args.work, args.flux_depth)
        config = AppConfig.for_data_dir(data)
        base = choose_precision(config)
        hires: dict[str, Any] = {}
        if args.hires:
            hires = dict(
                enable_hr=True, hr_scale=args.hires, hr_second_pass_steps=steps, denoising_strength=0.5
            )
        request = Txt2ImgRequest(
            prompt=PROMPT, negative_prompt="" if flux else "blurry", checkpoint=name, width=size, height=size,
            steps=steps, seed=SEED, cfg_scale=model.cfg, sampler_name="Euler",
            scheduler="Simple" if flux else "Automatic", save_images=False,
            **({"distilled_cfg_scale": 3.5} if flux else {}), **hires,
        )  # fmt: skip
        for mode in args.modes:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            precision = dataclasses.replace(base, vram=mode)
            # on the CPU the offloader still runs (CPU to CPU) so that the smoke run goes through it
            offloader = Offloader(mode, precision.device) if mode != "none" else None
            manager = ModelManager(config, precision, offloader=offloader)
            manager.refresh()
            engine = Engine(config, manager)
            engine.run(request)  # warm-up (and the load)
            moves_before = len(offloader.moves) if offloader is not None else 0
            times, peak = [], None
            for _ in range(repeats):
                seconds, used = _measure(functools.partial(engine.run, request), cuda)
                times.append(seconds)
                peak = max(peak or 0, used) if used is not None else None
            moves = (len(offloader.moves) - moves_before) // repeats if offloader is not None else 0
            rows.append(ModeRow(model.label, mode, statistics.median(times), peak, moves))
            print(format_mode_row(rows[-1], rows), flush=True)
            print(f"  {model.label} {mode}: done", file=sys.stderr, flush=True)
            del engine, manager, offloader
    return rows


# ---- output -----------------------------------------------------------------------------------------

HEADER = (
    f"{'model':<11}{'batch':>6}{'ours s':>9}{'img/s':>8}{'it/s':>8}"
    f"{'diffusers s':>13}{'img/s':>8}{'it/s':>8}{'ratio':>7}{'VRAM ours':>11}{'VRAM diff.':>11}"
)


def format_row(r: Row) -> str:
    def vram(b: int | None) -> str:
        return f"{b / GiB:.2f} GiB" if b is not None else "-"

    return (
        f"{r.model:<11}{r.batch:>6}{r.ours:>9.3f}{r.batch / r.ours:>8.2f}{r.steps / r.ours:>8.2f}"
        f"{r.theirs:>13.3f}{r.batch / r.theirs:>8.2f}{r.steps / r.theirs:>8.2f}{r.ours / r.theirs:>7.2f}"
        f"{vram(r.vram_ours):>11}{vram(r.vram_theirs):>11}"
    )


MODE_HEADER = f"{'model':<11}{'VRAM mode':>10}{'ours s':>9}{'x none':>8}{'peak VRAM':>11}{'moves':>7}"


def format_mode_row(r: ModeRow, rows: list[ModeRow]) -> str:
    """One row of the VRAM-mode table; its time against the same model's mode none among `rows`."""
    base = {x.model: x.seconds for x in rows if x.mode == "none"}
    ratio = f"{r.seconds / base[r.model]:>8.2f}" if r.model in base else f"{'-':>8}"
    vram = f"{r.vram / GiB:.2f} GiB" if r.vram is not None else "-"
    return f"{r.model:<11}{r.mode:>10}{r.seconds:>9.3f}{ratio}{vram:>11}{r.moves:>7}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the tiny demo models, 64 px, 2 steps, one repeat")
    p.add_argument("--models", default="sd15,sdxl,flux", help="comma-separated: sd15, sdxl, flux")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes ('' skips the table)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--work", type=Path, default=ROOT / "bench" / "results" / "gpu", help="where files are kept"
    )
    p.add_argument("--flux-depth", type=float, default=1.0, help="fraction of Flux's blocks (full width)")
    p.add_argument(
        "--modes", default="none,medvram,lowvram", help="VRAM modes of the second table ('' skips it)"
    )
    p.add_argument("--hires", type=float, default=0.0, help="hires fix scale in the VRAM-mode table (0: off)")
    p.add_argument("--compile", action="store_true", help="a third table: batch 1 eager vs --compile")
    args = p.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad_modes = [m for m in args.modes if m not in ("none", "medvram", "lowvram")]
    if bad_modes:
        p.error(f"--modes: unknown {', '.join(bad_modes)}; valid: none, medvram, lowvram")
    if args.hires and not 1.0 <= args.hires <= 4.0:
        p.error(f"--hires: a scale from 1 to 4 (0: off), got {args.hires}")
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; valid: {', '.join(MODELS)}")

    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches: whole numbers separated by commas, got {args.batches!r}")
    if args.batches and min(args.batches) < 1:
        p.error("--batches: each batch size must be at least 1")

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no CUDA)"
    kind = "smoke: tiny demo models, 64 px, 2 steps" if args.smoke else "random weights of the real shapes"
    print(f"bench/gpu.py on {device}, torch {torch.__version__}; {kind}", flush=True)
    if args.batches:
        print(HEADER, flush=True)  # each row is printed as soon as it is measured
        for key in keys:
            m = MODELS[key]
            size, steps, repeats = (64, 2, 1) if args.smoke else (m.size, m.steps, args.repeats)
            run_model(m, args, size, steps, repeats)
        target = "target on a GPU: <= 1.05 at batch 8"
        print(f"ratio: our seconds / diffusers' seconds for the same batch ({target})", flush=True)
    if args.modes:
        print()
        print(MODE_HEADER, flush=True)
        for key in keys:
            m = MODELS[key]
            size, steps, repeats = (64, 2, 1) if args.smoke else (m.size, m.steps, args.repeats)
            run_modes(m, args, size, steps, repeats)
        hr = f", hires fix x{args.hires:g}" if args.hires else ""
        print(f"batch 1{hr}; x none: seconds / seconds in mode none; moves: the offloader's moves per run")
    if args.compile:
        print()
        run_compile(keys, args)


def run_compile(keys: list[str], args: argparse.Namespace) -> None:
    """Each model at batch 1, eager against --compile (bench/compile.py's comparison)."""
    import compile as compile_bench

    print(compile_bench.HEADER, flush=True)
    for key in keys:
        m = MODELS[key]
        size, steps, repeats = (64, 2, 1) if args.smoke else (m.size, m.steps, args.repeats)
        flux = m.key == "flux"
        extra: dict[str, Any] = dict(cfg_scale=m.cfg)
        if flux:
            extra.update(negative_prompt="", scheduler="Simple", distilled_cfg_scale=3.5)
        with tempfile.TemporaryDirectory(prefix="sfumato-compile-") as tmp:
            data = Path(tmp)
            folder = data / "models" / "Stable-diffusion"
            folder.mkdir(parents=True)
            name = write_model(m, folder, args.smoke, args.work, args.flux_depth)
            row = compile_bench.compare(data, name, m.label, size, steps, repeats, **extra)
        print(compile_bench.format_row(row), flush=True)
        print(f"  {m.label} compile: done", file=sys.stderr, flush=True)
    print("speedup: eager seconds / compiled seconds at batch 1; 1st run: cold compile + run")


if __name__ == "__main__":
    main()
