#!/usr/bin/env bash
# Run ON the lent GPU machine (the device tool's `run`, with carry [".whl"]), from the repository root:
#   bash bench/device/run.sh [bench/gpu.py arguments]
# Installs the carried wheels, prints the GPU, then runs bench/gpu.py (default: SD1.5 and SDXL, batch 1
# and 8, the VRAM-mode table with hires fix x1.5), teeing everything into $OUT so it comes back.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sfumato-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"
if [ "$#" -eq 0 ]; then
  set -- --models sd15,sdxl --batches 1,8 --repeats 2 --hires 1.5
fi
python3 bench/gpu.py "$@" 2>&1 | tee "$OUT/gpu-bench.txt"
