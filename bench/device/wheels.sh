#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root, before a GPU run: downloads the wheels the
# lent GPU machine lacks (its Python is 3.12 with torch, accelerate, safetensors, tokenizers and
# huggingface_hub already; it reaches no registry) into .whl/, which git ignores and `carry` sends.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl diffusers==0.42.1 transformers==5.24.0 lark==1.3.1 torchsde==0.2.6 trampoline==0.1.2 \
  importlib_metadata==8.7.0
du -sh .whl
