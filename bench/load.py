"""Model load time and peak memory: tiny fixtures, an SD1.5-size random-weight single file, and
Flux- and SD3.5-Large-size random-weight transformers.

    python bench/load.py [--repeats 3] [--skip-large | --skip-sd15 | --skip-flow]
                         [--flow-depth auto|1|0.25...] [--device cpu|cuda] [--work DIR]

Each load runs in a fresh child process (so peak RSS is that load's alone) through the real loader
(`webui.core.models.loader.load_model`, fp32 on the CPU; the flow transformers through
`flow_loader.load_flow_transformer` in bf16, the file's dtype). Prints, per file: size on disk, median
and spread of load time, and peak RSS minus the child's RSS before loading, as bytes and as a multiple
of the file size (about 1.0 means the weights were held once; 2.0 would mean a copy). The SD1.5-size file
(~4.3 GB fp32) is written once into the work folder and reused.

The flow sizes are the official transformer configs (bench/configs/, copied from the diffusers repos):
their meta-device parameter counts are printed and checked against the model cards (Flux.1 11.9B,
SD3.5 Large 8.1B), then a random-weight bf16 (or `--flow-dtype fp8`: float8_e4m3fn, whose block
weights stay fp8 in memory) file in the original layout (BFL's Flux transformer, Stability's MMDiT) is
written and loaded (compute dtype bf16). A full Flux file is 23.8 GB; `--flow-depth auto` keeps the
full depth only when this machine has the RAM (2x the file) and disk for it, and otherwise takes a
fraction of the blocks at the official width, saying so. `--skip-large` runs only the tiny fixtures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webui import offline  # noqa: E402

offline.apply()


def _status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process; unlike ru_maxrss, VmHWM starts afresh at exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(path: Path, device: str) -> None:
    import diffusers  # noqa: F401
    import torch  # import cost not counted
    import transformers  # noqa: F401

    from webui.core.models.components import Precision
    from webui.core.models.loader import load_model

    precision = Precision("cuda", torch.float16, torch.float16) if device == "cuda" else Precision()
    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    parts = load_model(path, precision)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _status_bytes("VmHWM")
    result = {"seconds": seconds, "peak_extra": peak - before, "params": parts.nbytes()}
    if device == "cuda":  # a sanity forward pass in the loaded dtype, on the device
        unet = parts.unet
        x = torch.randn(2, unet.config.in_channels, 32, 32, device="cuda", dtype=torch.float16)
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device="cuda", dtype=torch.float16)
        extra = {}
        if unet.config.addition_embed_type == "text_time":
            n = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            extra = {"added_cond_kwargs": {
                "text_embeds": torch.randn(2, n, device="cuda", dtype=torch.float16),
                "time_ids": torch.zeros(2, 6, device="cuda", dtype=torch.float16),
            }}  # fmt: skip
        with torch.no_grad():
            out = unet(x, 500, ctx, **extra).sample
        result["forward_finite"] = bool(torch.isfinite(out).all())
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


def child_flow(path: Path, device: str) -> None:
    import diffusers  # noqa: F401
    import torch

    from webui.core.models.flow_loader import load_flow_transformer

    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    transformer = load_flow_transformer(path, torch.bfloat16)
    if device == "cuda":
        transformer.to("cuda")
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _status_bytes("VmHWM")
    params = sum(p.numel() for p in transformer.parameters())
    result = {"seconds": seconds, "peak_extra": peak - before, "params": params}
    if device == "cuda":
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


FLOW_DTYPES = {"bf16": "bfloat16", "fp8": "float8_e4m3fn"}


def flow_depths(arg: str, work: Path, dtype: object) -> dict[str, float]:
    """The depth scale of each flow size: the given one, or (auto) the largest of 1, 1/2, 1/4... whose
    file fits twice in the available RAM and, with the others, on the work folder's disk."""
    import psutil
    from flow_sizes import SIZES, file_bytes

    if arg != "auto":
        return {name: float(arg) for name in SIZES}
    ram = psutil.virtual_memory().available
    work.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(work).free - (2 << 30)
    out: dict[str, float] = {}
    for name in SIZES:
        scale = 1.0
        while scale > 1 / 64 and (
            2 * file_bytes(name, scale, dtype) > ram or file_bytes(name, scale, dtype) > disk / 2
        ):
            scale /= 2
        out[name] = scale
    return out


def make_flow_files(work: Path, depth_arg: str, dtype_name: str) -> dict[Path, int]:
    """The flow-size files (written once per size and depth) and the parameter count of each one's
    config on the meta device, after checking the official counts."""
    import torch
    from flow_sizes import (
        OFFICIAL_BILLIONS,
        meta_transformer,
        official_config,
        parameter_count,
        write_random,
    )

    dtype = getattr(torch, FLOW_DTYPES[dtype_name])
    files: dict[Path, int] = {}
    for name, scale in flow_depths(depth_arg, work, dtype).items():
        full = parameter_count(meta_transformer(name))
        ok = round(full / 1e9, 1) == OFFICIAL_BILLIONS[name]
        print(
            f"{name}: official config {full:,} parameters on the meta device "
            f"({full / 1e9:.2f}B; model card {OFFICIAL_BILLIONS[name]}B: {'ok' if ok else 'MISMATCH'})"
        )
        if not ok:
            raise SystemExit(f"{name}: the official config does not give {OFFICIAL_BILLIONS[name]}B")
        path = work / f"{name}-{dtype_name}-x{scale:g}.safetensors"
        if scale < 1:
            cfg = official_config(name, scale)
            blocks = ", ".join(f"{cfg[k]} {k}" for k in ("num_layers", "num_single_layers") if k in cfg)
            print(f"  REDUCED DEPTH x{scale:g} for this machine (full width, {blocks}): "
                  f"{parameter_count(meta_transformer(name, scale)):,} parameters; use --flow-depth 1 "
                  "where RAM is 2x and disk 1x the full file")  # fmt: skip
        if not path.exists():
            print(f"  writing {path.name} (once) ...", flush=True)
            write_random(path, name, scale, dtype)
        files[path] = parameter_count(meta_transformer(name, scale))
    return files


def full_size_sd1() -> object:
    """SD1.5's shapes (from the shipped config) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from webui.core.models.configs import load_component_config
    from webui.core.models.tiny import TinyModel

    te_cfg = {k: v for k, v in load_component_config("sd1", "text_encoder").items() if k != "architectures"}
    return TinyModel(
        arch="sd1",
        unet=UNet2DConditionModel.from_config(load_component_config("sd1", "unet")).eval(),
        vae=AutoencoderKL.from_config(load_component_config("sd1", "vae")).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**te_cfg)).eval(),
        text_encoder_2=None,
        scheduler_config=load_component_config("sd1", "scheduler"),
    )


def make_files(work: Path, large: bool) -> list[Path]:
    import torch

    from webui.core.models.tiny import ARCHES, build_tiny, save_single_file

    work.mkdir(parents=True, exist_ok=True)
    files = [save_single_file(build_tiny(a), work / f"tiny-{a}.safetensors") for a in ARCHES]
    big = work / "sd15-size-random.safetensors"
    if large and not big.exists():
        print("writing an SD1.5-size random-weight checkpoint (once) ...", flush=True)
        torch.manual_seed(0)
        save_single_file(full_size_sd1(), big)
    if large:
        files.append(big)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child-flow", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-large", action="store_true", help="only the tiny fixtures")
    ap.add_argument("--skip-flow", action="store_true", help="no Flux / SD3.5 Large size files")
    ap.add_argument("--skip-sd15", action="store_true", help="no SD1.5-size file")
    ap.add_argument("--flow-dtype", choices=list(FLOW_DTYPES), default="bf16", help="flow files' dtype")
    ap.add_argument("--flow-depth", default="auto", help="block fraction of the flow sizes: auto, 1, 0.25...")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: fp16 on the GPU")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "load")
    args = ap.parse_args()
    if args.child:
        (child_flow if args.child_flow else child)(args.child, args.device)
        return
    files = make_files(args.work, not (args.skip_large or args.skip_sd15))
    flow: dict[Path, int] = {}
    if not (args.skip_large or args.skip_flow):
        flow = make_flow_files(args.work, args.flow_depth, args.flow_dtype)
    print(
        f"{'file':34} {'size MiB':>9} {'load s (median)':>16} {'spread s':>9} "
        f"{'peak extra MiB':>15} {'x size':>7}"
    )
    for f in [*files, *flow]:
        runs = []
        for _ in range(args.repeats):
            extra = ["--child-flow"] if f in flow else []
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(f), "--device", args.device, *extra],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        secs = [r["seconds"] for r in runs]
        peak = statistics.median(r["peak_extra"] for r in runs)
        size = f.stat().st_size
        gpu = ""
        if args.device == "cuda":
            r0 = runs[0]
            gpu = f"  GPU peak {r0['cuda_peak'] / 2**20:.0f} MiB"
            gpu += f", forward finite: {r0['forward_finite']}" if "forward_finite" in r0 else ""
        if f in flow:
            loaded = runs[0]["params"]
            gpu += f"  {loaded:,} parameters loaded ({'= config' if loaded == flow[f] else 'MISMATCH'})"
        print(
            f"{f.name:34} {size / 2**20:9.1f} {statistics.median(secs):16.3f} "
            f"{max(secs) - min(secs):9.3f} {peak / 2**20:15.1f} {peak / size:7.2f}{gpu}",
            flush=True,
        )


if __name__ == "__main__":
    main()
