#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root, before a GPU run: downloads the wheels the
# lent GPU machine lacks into .whl/, which git ignores and `carry` sends. That machine's Python is 3.12
# with torch, accelerate, safetensors, tokenizers, huggingface_hub, filelock, requests, numpy, pillow,
# pyyaml, scipy, zipp, typer and tqdm already (/work/.library/device/KINDS.md); it reaches no registry,
# and run.sh installs these with --no-deps. So each wheel's own needs must be there or here:
#   diffusers      importlib_metadata (here); filelock, huggingface-hub>=1.32, numpy, requests,
#                  safetensors>=0.8, Pillow (there)
#   transformers   5.24 as the tests pin (there: 5.17); regex>=2025.10.22, checked at import: carried, as
#                  the machine's regex version is not recorded; tokenizers 0.23.x, huggingface-hub>=1.31,
#                  typer, tqdm, pyyaml, packaging (there)
#   lark           the prompt grammar; torchsde + trampoline: the SDE samplers
# Dry run of the install here: bash bench/device/wheels.sh --check
set -euo pipefail
cd "$(dirname "$0")/../.."
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl diffusers==0.42.1 transformers==5.24.0 \
  lark==1.3.1 torchsde==0.2.6 trampoline==0.1.2 importlib_metadata==8.7.0 regex==2026.12.2
du -sh .whl
if [ "${1:-}" = "--check" ]; then  # one version of each, and pip accepts the set as run.sh installs it
  dupes=$(ls .whl | sed 's/-[0-9].*//' | sort | uniq -d)
  [ -z "$dupes" ] || { echo "two versions of: $dupes (delete the old one from .whl/)"; exit 1; }
  tmp=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$tmp" "${PLATFORM[@]}" .whl/*.whl
  ls "$tmp" | grep -c dist-info
  rm -rf "$tmp"
fi
