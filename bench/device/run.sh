#!/usr/bin/env bash
# Run ON the lent GPU machine (the device tool's `run`, with carry [".whl"] and timeout_s 600), from the
# repository root, after bench/device/wheels.sh here:
#   bash bench/device/run.sh [--budget SECONDS] [bench/gpu.py arguments]
# Time-boxed (default 450 s of its own, so one call fits with room to spare): the steps run most useful
# first, each cut by `timeout` when the box runs out, the rest then skipped; bench/gpu.py prints each
# row as it is measured, and every step tees into its own file in $OUT, so a cut run keeps what it got:
#   gpu.txt      the GPU, the versions, and an import of what bench/gpu.py needs (stops here on failure)
#   sd15.txt     --models sd15: ours vs diffusers at batch 1 and 8, then the VRAM modes with hires x1.5
#   sdxl.txt     the same for SDXL
#   compile.txt  --models sd15 --compile: eager vs compiled (CUDA graphs), the cold compile's seconds
#   steps.txt    each step's command, seconds and exit status (124: cut by the time box)
# With bench/gpu.py arguments, one step (custom.txt) runs them instead.
set -uo pipefail
BUDGET=450
if [ "${1:-}" = "--budget" ]; then BUDGET=$2; shift 2; fi
END=$((SECONDS + BUDGET))
OUT=${OUT:-/tmp/sfumato-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl 2>&1 | tee "$OUT/gpu.txt" || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee -a "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/gpu.txt" || exit 1
import importlib.metadata as md
import sys

import torch

print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print({n: md.version(n) for n in ("diffusers", "transformers", "huggingface_hub", "tokenizers", "regex",
                                  "safetensors", "accelerate", "lark", "numpy", "pillow")})
assert torch.cuda.is_available(), "torch sees no CUDA device"
free, total = torch.cuda.mem_get_info()
print(torch.cuda.get_device_name(), f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free",
      "bf16", torch.cuda.is_bf16_supported())
sys.path.insert(0, ".")
import diffusers, lark, torchsde  # noqa: E401,F401  (what bench/gpu.py and the engine import)
from webui.core.engine import Engine  # noqa: F401
from webui.core.devices import choose_precision
from webui.core.config import AppConfig
from pathlib import Path
print("engine precision:", choose_precision(AppConfig.for_data_dir(Path("/tmp/sfumato-preflight"))))
PY

step() {  # step NAME ARGS...: bench/gpu.py ARGS, teed into $OUT/NAME.txt, cut at the end of the box
  local name=$1 left=$((END - SECONDS)) start=$SECONDS rc
  shift
  if [ "$left" -lt 30 ]; then
    echo "$name: skipped (time box of ${BUDGET}s reached)" | tee -a "$OUT/steps.txt"
    return
  fi
  timeout -k 10 "$left" python3 bench/gpu.py "$@" 2>&1 | tee "$OUT/$name.txt"
  rc=${PIPESTATUS[0]}
  echo "$name: bench/gpu.py $* -> exit $rc after $((SECONDS - start))s (left ${left}s)" | tee -a "$OUT/steps.txt"
}

if [ "$#" -gt 0 ]; then
  step custom "$@"
else
  step sd15 --models sd15 --batches 1,8 --repeats 2 --hires 1.5
  step sdxl --models sdxl --batches 1,8 --repeats 2 --hires 1.5
  step compile --models sd15 --batches "" --modes "" --repeats 2 --compile
fi
