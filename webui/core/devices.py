"""Device and dtype choice from the flags: fp16 (or bf16) on CUDA, fp32 on the CPU unless asked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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


def worker_precisions(
    config: AppConfig,
    device_ids: Sequence[int] | None = None,
    cpu_workers: int = 1,
    cuda_count: int | None = None,
) -> list[Precision]:
    """One Precision per job worker: one per CUDA device in `device_ids` (None: every visible one), or
    `cpu_workers` CPU workers when the models run on the CPU (--use-cpu, or no CUDA device). Raises
    ValueError naming the flag for a device that does not exist or a combination that cannot work."""
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if cpu_workers < 1:
        raise ValueError(f"--workers: must be 1 or more, got {cpu_workers}")
    base = choose_precision(config, cuda_available=count > 0)
    if base.device == "cpu":
        if device_ids:
            where = "--use-cpu is set" if config.use_cpu else "this machine has no CUDA device"
            raise ValueError(f"--device-ids: {where}; the models run on the CPU")
        return [base] * cpu_workers
    if cpu_workers != 1:
        raise ValueError("--workers: counts CPU workers; on a GPU machine choose devices with --device-ids")
    if device_ids is None and count == 1:
        return [base]  # the one GPU, as "cuda"
    ids = list(range(count)) if device_ids is None else list(device_ids)
    if not ids:
        raise ValueError("--device-ids: name at least one device")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--device-ids: a device is named twice: {','.join(map(str, ids))}")
    missing = [i for i in ids if not 0 <= i < count]
    if missing:
        raise ValueError(
            f"--device-ids: no CUDA device {missing[0]}; this machine has {count} (0-{count - 1})"
        )
    return [dataclasses.replace(base, device=f"cuda:{i}") for i in ids]
