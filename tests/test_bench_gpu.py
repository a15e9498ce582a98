"""bench/gpu.py --smoke: the engine-against-diffusers table runs on the CPU with the tiny demo models
(what CI can prove; the figures themselves are for a GPU and are not checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"
NUMBER = r"\d+\.\d+"


def test_smoke_prints_ours_and_diffusers_side_by_side_for_each_model(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(BENCH), "--smoke", "--batches", "1,2", "--work", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    for column in ("ours s", "img/s", "it/s", "diffusers s", "ratio", "VRAM ours"):
        assert column in lines[header]
    rows = lines[header + 1 : header + 7]
    pattern = rf"^(SD1\.5|SDXL|Flux\.1 dev)\s+([12])\s+({NUMBER}\s+){{7}}(-|{NUMBER} GiB)\s+(-|{NUMBER} GiB)$"
    seen = set()
    for row in rows:
        m = re.match(pattern, row)
        assert m, row
        seen.add((m.group(1), m.group(2)))
    assert seen == {(model, b) for model in ("SD1.5", "SDXL", "Flux.1 dev") for b in ("1", "2")}


def test_bad_arguments_are_refused_naming_the_flag() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--models", "sd9"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--models: unknown sd9" in done.stderr
    done = subprocess.run([sys.executable, str(BENCH), "--batches", "0"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--batches" in done.stderr
