"""Device and dtype choice from the flags: fp16 (or bf16) on CUDA, fp32 on the CPU unless asked."""

from __future__ import annotations

import torch

from webui.core.config import AppConfig
from webui.core.models.components import Precision


def choose_precision(config: AppConfig, cuda_available: bool | None = None) -> Precision:
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if config.use_cpu or not cuda:
        return Precision("cpu", torch.float32, torch.float32)
    if config.no_half or config.precision == "full":
        dtype = torch.float32
    elif config.precision == "bf16":
        dtype = torch.bfloat16
    else:
        dtype = torch.float16
    vae_dtype = torch.float32 if config.no_half_vae else dtype
    return Precision("cuda", dtype, vae_dtype)


BATCH_MODES = ("auto", "batched", "per-image")


def per_image(batch_mode: str, device: torch.device | str) -> bool:
    """Whether the denoiser runs image by image (`--batch-mode`): 'auto' batches on an accelerator, where
    one call for the batch uses the chip, and goes image by image on the CPU, where batching gains
    nothing and image i of a batch is then bit-identical to a single run with its seed."""
    if batch_mode not in BATCH_MODES:
        raise ValueError(f"batch mode must be one of {', '.join(BATCH_MODES)}, got {batch_mode!r}")
    if batch_mode == "auto":
        return torch.device(device).type == "cpu"
    return batch_mode == "per-image"
