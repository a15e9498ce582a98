"""Checkpoint merger speed: a weighted-sum merge of two checkpoints against reading them once.

    python bench/merge.py [--size tiny|sd15] [--work DIR]

`sd15` uses two SD1.5-size random-weight fp32 files (~4.3 GB each; the first is bench/load.py's, the
second is written from its header with other random values, once). Prints the time to read both files
once (every tensor into memory, as the loader does), the merge's time (read A and B tensor by tensor,
mix in float32, write the result atomically; in a child process), the ratio, and the merge's peak
growth of its own memory (RssAnon, sampled every few ms from this process; pages of the memory-mapped
inputs are the kernel's cache and not counted) against one file's size: the merge streams, so this is
a few copies of the largest tensor, not a model. Never passes or fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()


def _second_file(first: Path, second: Path) -> None:
    import torch

    from webui.core.models.checkpoint_file import _TORCH_DTYPES, read_safetensors_header
    from webui.core.models.safetensors_writer import Planned, write_streaming

    header = read_safetensors_header(first)
    plan = [Planned(k, _TORCH_DTYPES[m.dtype], m.shape) for k, m in header.items()]
    gen = torch.Generator().manual_seed(1)

    def produce(item: Planned) -> torch.Tensor:
        if not item.dtype.is_floating_point:
            return torch.zeros(item.shape, dtype=item.dtype)
        return (torch.randn(item.shape, generator=gen) * 0.02).to(item.dtype)

    write_streaming(second, plan, produce, {"format": "pt"})


def _files(size: str, work: Path) -> tuple[Path, Path]:
    from webui.core.models.tiny import build_tiny, save_single_file

    work.mkdir(parents=True, exist_ok=True)
    if size == "tiny":
        return (
            save_single_file(build_tiny("sd1", seed=1), work / "tiny-a.safetensors"),
            save_single_file(build_tiny("sd1", seed=2), work / "tiny-b.safetensors"),
        )
    first = ROOT / "bench" / "results" / "load" / "sd15-size-random.safetensors"
    if not first.exists():
        raise SystemExit(f"{first} is missing: run `python bench/load.py` once first (it writes it)")
    second = work / "sd15-size-random-b.safetensors"
    if not second.exists():
        print("writing a second SD1.5-size random-weight checkpoint (once) ...", flush=True)
        _second_file(first, second)
    return first, second


def _anon_bytes(pid: int) -> int:
    """RssAnon of a process: its own memory (file pages mapped for reading are not counted)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _merge_child(a: Path, b: Path, out: Path) -> None:
    from webui.core.models.merge import MergeRequest, merge_checkpoints

    print(_anon_bytes(os.getpid()), flush=True)  # the baseline, once imports are done
    sys.stdin.readline()  # the parent is watching: go
    merge_checkpoints(MergeRequest(a, out, "Weighted sum", b, multiplier=0.5))


def _watched_merge(a: Path, b: Path, out: Path) -> tuple[float, int]:
    """Merge in a child process while this one samples its RssAnon every few milliseconds."""
    cmd = [sys.executable, __file__, "--merge-child", str(a), str(b), str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    baseline = int(proc.stdout.readline())
    peak = baseline
    t0 = time.perf_counter()
    proc.stdin.write("\n")
    proc.stdin.flush()
    while proc.poll() is None:
        peak = max(peak, _anon_bytes(proc.pid))
        time.sleep(0.003)
    if proc.returncode != 0:
        raise SystemExit(f"merge failed with exit {proc.returncode}")
    return time.perf_counter() - t0, peak - baseline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "sd15"], default="sd15")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "merge")
    ap.add_argument("--merge-child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.merge_child:
        _merge_child(*args.merge_child)
        return
    from webui.core.models.checkpoint_file import load_state_dict

    a, b = _files(args.size, args.work)
    t0 = time.perf_counter()
    for path in (a, b):
        sd = load_state_dict(path)
        del sd
    read_s = time.perf_counter() - t0
    out = args.work / f"merged-{args.size}.safetensors"
    out.unlink(missing_ok=True)
    merge_s, grown = _watched_merge(a, b, out)
    size = a.stat().st_size
    print(f"files: 2 x {size / 2**20:.1f} MiB ({args.size})")
    print(f"read both once:        {read_s:8.2f} s")
    print(f"weighted-sum merge:    {merge_s:8.2f} s   ratio {merge_s / read_s:.2f}")
    print(
        f"peak own memory (RssAnon) during the merge: +{grown / 2**20:.0f} MiB ({grown / size:.3f}x one file)"
    )
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
