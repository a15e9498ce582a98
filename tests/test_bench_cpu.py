"""bench/cpu.py --smoke: the CPU levers' table runs with the tiny demo model (what CI can prove; the
figures are for a real-size model and are not checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "cpu.py"
NUMBER = r"\d+\.\d+"


def test_smoke_prints_every_lever_beside_fp32_and_a_whole_job() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(BENCH), "--smoke", "--repeats", "1", "--job-steps", "2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("part"))
    assert lines[header].split() == ["part", "variant", "seconds", "speedup", "max", "diff"]
    row = re.compile(rf"^(step|decode)\s+(.+?)\s+({NUMBER})\s+({NUMBER})\s+(\d\.\d\de[+-]\d\d)$")
    found = {}
    for line in lines[header + 1 :]:
        m = row.match(line)
        if m:
            found[m.group(1), m.group(2)] = (float(m.group(3)), float(m.group(4)), float(m.group(5)))
    variants = ("fp32", "fp32 channels-last", "bf16", "bf16 channels-last (--precision bf16)")
    for part in ("step", "decode"):
        assert {(part, v) for v in variants} <= set(found)
        seconds, speedup, diff = found[part, "fp32"]
        assert speedup == 1.0 and diff == 0.0  # fp32 is the reference
        assert found[part, "fp32 channels-last"][2] < 1e-3  # the same numbers, another memory layout
        assert found[part, "bf16"][2] > 0  # bf16 really ran in bf16
    assert any(re.match(r"^step\s+jemalloc", line) for line in lines)
    job = next(line for line in lines if line.startswith("job"))
    assert re.search(rf"fp32 {NUMBER} s, --precision bf16 {NUMBER} s, {NUMBER}x; mean pixel difference", job)


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--size", "100"], capture_output=True, text=True)
    assert done.returncode == 2 and "--size" in done.stderr
