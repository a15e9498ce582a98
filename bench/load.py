"""Model load time and peak memory: tiny fixtures and an SD1.5-size random-weight single file.

    python bench/load.py [--repeats 3] [--skip-large] [--work DIR]

Each load runs in a fresh child process (so peak RSS is that load's alone) through the real loader
(`webui.core.models.loader.load_model`, fp32 on the CPU). Prints, per file: size on disk, median and
spread of load time, and peak RSS minus the child's RSS before loading, as bytes and as a multiple of
the file size (about 1.0 means the weights were held once; 2.0 would mean a copy). The SD1.5-size file
(~4.3 GB fp32) is written once into the work folder and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    ap.add_argument("--skip-large", action="store_true", help="only the tiny fixtures")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: fp16 on the GPU")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "load")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.device)
        return
    files = make_files(args.work, not args.skip_large)
    print(
        f"{'file':34} {'size MiB':>9} {'load s (median)':>16} {'spread s':>9} "
        f"{'peak extra MiB':>15} {'x size':>7}"
    )
    for f in files:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(f), "--device", args.device],
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
            gpu = f"  GPU peak {r0['cuda_peak'] / 2**20:.0f} MiB, forward finite: {r0['forward_finite']}"
        print(
            f"{f.name:34} {size / 2**20:9.1f} {statistics.median(secs):16.3f} "
            f"{max(secs) - min(secs):9.3f} {peak / 2**20:15.1f} {peak / size:7.2f}{gpu}",
            flush=True,
        )


if __name__ == "__main__":
    main()
