"""Extra time per job for LoRAs, and the listing time of a 10,000-file LoRA library.

    python bench/lora.py [--device cpu|cuda] [--repeats 5] [--files 10000] [--skip-mid] [--work DIR]

Per model (the tiny SD1 fixture; a mid-size random UNet with SD1's attention widths, ~100M
parameters, unless --skip-mid), for 1 and 3 kohya-format LoRAs (rank 16; the third a LoCon):
- cold: first job with these files (read + parse + patch + restore),
- warm: a repeat (parsed networks come from the cache: patch + restore only), median of the repeats,
- empty: a job without networks (the per-model lock only).
Then: list 10,000 header-only safetensors files (a stat each), resolve an alias (reads each header once),
and build the /sdapi/v1/loras listing. Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

import torch  # noqa: E402

from webui.core.models.tiny import build_tiny  # noqa: E402
from webui.core.networks.apply import NetworkCache, apply_networks  # noqa: E402
from webui.core.networks.registry import LoraLibrary, scan_loras  # noqa: E402
from webui.core.networks.tiny import write_header_only, write_tiny_lora  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def mid_model() -> Any:
    """A UNet with SD1's block layout and text width at reduced channels, plus the tiny text encoder."""
    from diffusers import UNet2DConditionModel

    tiny = build_tiny("sd1")
    unet_cls: Any = UNet2DConditionModel
    unet = unet_cls(
        sample_size=64,
        block_out_channels=(160, 320, 640, 640),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    text = tiny.text_encoder
    return SimpleNamespace(unet=unet, text_encoder=text, text_encoder_2=None, label="mid-size", arch="sd1")


def bench_model(label: str, model: Any, work: Path, device: str, repeats: int) -> None:
    model.unet.to(device)
    model.text_encoder.to(device)
    params = sum(p.numel() for p in model.unet.parameters())
    files = [
        write_tiny_lora(work / f"{label}-{i}.safetensors", model, fmt, rank=16, seed=i)
        for i, fmt in enumerate(("kohya", "kohya", "locon"))
    ]
    lib = LoraLibrary([work], work / "hashes.sqlite")
    nets = [item for item in lib.items() if item.path in files]
    print(f"\n{label}: UNet {params / 1e6:.1f}M parameters on {device}")
    for count in (1, 3):
        chosen = [(n, 1.0, 0.8) for n in nets[:count]]
        cache = NetworkCache()

        def job(cache: NetworkCache = cache, chosen: list[Any] = chosen) -> None:
            with apply_networks(model, chosen, cache):
                pass

        cold = _timed(job, device)
        warm = [_timed(job, device) for _ in range(repeats)]
        with apply_networks(model, chosen, cache) as info:
            modules = sum(a.modules for a in info.applied)
        size = sum(f.stat().st_size for f in files[:count]) / 2**20
        print(
            f"  {count} LoRA ({size:.1f} MiB, {modules} module patches): cold {cold * 1000:.1f} ms, "
            f"warm median {statistics.median(warm) * 1000:.1f} ms (min {min(warm) * 1000:.1f})"
        )
    plain_cache = NetworkCache()

    def plain_job() -> None:
        with apply_networks(model, [], plain_cache):
            pass

    empty = [_timed(plain_job, device) for _ in range(repeats)]
    print(f"  no LoRA: {statistics.median(empty) * 1e6:.0f} us")


def bench_listing(work: Path, count: int) -> None:
    root = work / "Lora"
    t = time.perf_counter()
    for i in range(count):
        write_header_only(
            root / f"d{i % 50}" / f"net{i:05d}.safetensors",
            {"ss_output_name": f"alias{i}", "ss_base_model_version": "sd_v1"},
        )
    print(f"\nwrote {count} header-only files in {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    scan = scan_loras([root])
    print(f"  scan (list + stat): {(time.perf_counter() - t) * 1000:.0f} ms for {len(scan.files)} files")
    lib = LoraLibrary([root], work / "list-hashes.sqlite")
    t = time.perf_counter()
    lib.items()
    hit = lib.find(f"net{count - 1:05d}")
    ms = (time.perf_counter() - t) * 1000
    print(f"  library first listing + name look-up: {ms:.0f} ms (found: {hit is not None})")
    t = time.perf_counter()
    hit = lib.find(f"alias{count - 1}")
    print(f"  first alias look-up (reads every header): {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    listing = lib.listing()
    ms = (time.perf_counter() - t) * 1000
    print(f"  /sdapi/v1/loras listing (metadata cached): {ms:.0f} ms for {len(listing)} entries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--skip-mid", action="store_true")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bench_model("tiny-sd1", build_tiny("sd1"), work / "tiny", args.device, args.repeats)
        if not args.skip_mid:
            bench_model("mid", mid_model(), work / "mid", args.device, args.repeats)
        bench_listing(work, args.files)


if __name__ == "__main__":
    main()
