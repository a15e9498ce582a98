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
    # the second table: each model in each VRAM mode, with the offloader's moves (none in mode none)
    modes = next(i for i, line in enumerate(lines) if line.startswith("model") and "VRAM mode" in line)
    for column in ("ours s", "x none", "peak VRAM", "moves"):
        assert column in lines[modes]
    model_mode = r"^(SD1\.5|SDXL|Flux\.1 dev)\s+(none|medvram|lowvram)"
    row = rf"{model_mode}\s+{NUMBER}\s+{NUMBER}\s+(-|{NUMBER} GiB)\s+(\d+)$"
    found = {}
    for line in lines[modes + 1 : modes + 10]:
        m = re.match(row, line)
        assert m, line
        found[m.group(1), m.group(2)] = int(m.group(4))
    assert set(found) == {(model, mode) for model in ("SD1.5", "SDXL", "Flux.1 dev")
                          for mode in ("none", "medvram", "lowvram")}  # fmt: skip
    for model in ("SD1.5", "SDXL", "Flux.1 dev"):
        assert found[model, "none"] == 0 < found[model, "medvram"] < found[model, "lowvram"]


def test_bad_arguments_are_refused_naming_the_flag() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--models", "sd9"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--models: unknown sd9" in done.stderr
    done = subprocess.run([sys.executable, str(BENCH), "--batches", "0"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--batches" in done.stderr
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--modes", "none,highvram"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--modes: unknown highvram" in done.stderr


def test_an_empty_batches_list_skips_the_first_table_and_rows_come_as_measured(tmp_path: Path) -> None:
    """bench/device/run.sh's compile step runs with `--batches ''`: only the tables asked for."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(BENCH), "--smoke", "--models", "sd15", "--batches", "", "--modes", "none",
            "--work", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert not any("diffusers s" in line for line in lines)
    modes = next(i for i, line in enumerate(lines) if line.startswith("model") and "VRAM mode" in line)
    assert re.match(rf"^SD1\.5\s+none\s+{NUMBER}\s+1\.00\s+(-|{NUMBER} GiB)\s+0$", lines[modes + 1])
