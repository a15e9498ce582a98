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
