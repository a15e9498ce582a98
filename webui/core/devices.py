"""Device and dtype choice from the flags: fp16 (or bf16) on CUDA; on the CPU fp32, or bf16 when asked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from webui.core.config import AppConfig
from webui.core.models.components import Precision

VRAM_CHOICES = ("auto", "none", "medvram", "lowvram")
GiB = 2**30
# --vram auto, from the free memory of each worker's GPU at start: at least AUTO_NONE_GIB free keeps whole
# models on the GPU (SDXL in fp16 with hires fix fits), at least AUTO_MEDVRAM_GIB moves the parts in turn
# (medvram), less streams the denoiser block by block (lowvram).
AUTO_NONE_GIB = 12.0
AUTO_MEDVRAM_GIB = 6.0

FreeVram = Callable[[str], "int | None"]


def free_vram(device: str) -> int | None:
    """Free memory of a CUDA device now (torch.cuda.mem_get_info); None when it cannot be told."""
    try:
        free, _total = torch.cuda.mem_get_info(torch.device(device))
    except (RuntimeError, AssertionError, ValueError):
        return None
    return int(free)


def auto_vram(free_bytes: int | None) -> str:
    """The VRAM mode `--vram auto` picks for a GPU with `free_bytes` free (None: unknown -> none)."""
    if free_bytes is None or free_bytes >= AUTO_NONE_GIB * GiB:
        return "none"
    return "medvram" if free_bytes >= AUTO_MEDVRAM_GIB * GiB else "lowvram"


def resolve_vram(requested: str, device: str, free: FreeVram = free_vram) -> tuple[str, str | None]:
    """The VRAM mode a worker on `device` runs in, and a line for the user (None: nothing to say)."""
    if requested not in VRAM_CHOICES:
        raise ValueError(f"--vram: must be one of {', '.join(VRAM_CHOICES)}, got {requested!r}")
    if torch.device(device).type == "cpu":
        if requested in ("auto", "none"):
            return "none", None
        return "none", f"--{requested}: the models run on the CPU (no GPU here), in RAM: nothing to offload"
    if requested != "auto":
        return requested, f"{device}: VRAM mode {requested}"
    free_bytes = free(device)
    mode = auto_vram(free_bytes)
    seen = "free memory unknown" if free_bytes is None else f"{free_bytes / GiB:.1f} GiB free"
    limits = f"{AUTO_NONE_GIB:g} / {AUTO_MEDVRAM_GIB:g} GiB"
    return mode, f"{device}: VRAM mode {mode} (auto: {seen}; thresholds {limits})"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere torch emulates it,
    slower than fp32."""
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def precision_note(config: AppConfig, precision: Precision, bf16_hardware: bool | None = None) -> str | None:
    """A line for the user about the dtype the models run in on the CPU (None: nothing to say)."""
    if precision.device != "cpu":
        return None
    if precision.dtype == torch.bfloat16:
        hardware = cpu_has_bf16() if bf16_hardware is None else bf16_hardware
        if not hardware:
            return (
                "--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 runs "
                "emulated and slower than fp32; leave the flag out for fp32"
            )
        vae = "fp32" if precision.vae_dtype == torch.float32 else "bf16"
        return (
            f"the CPU runs the models in bf16 (--precision bf16; the VAE in {vae}): faster than fp32, "
            "pictures differ slightly from fp32 ones"
        )
    if config.precision == "half" and not config.no_half:
        return "--precision half: the CPU runs fp32 (fp16 is slow on CPUs); --precision bf16 is its fast half"
    return None


def device_notes(config: AppConfig, precision: Precision) -> list[str]:
    """The start-up lines about where and how the models run: the VRAM mode, the CPU's precision."""
    notes = [resolve_vram(config.vram, precision.device)[1], precision_note(config, precision)]
    return [n for n in notes if n is not None]


# what torch's RuntimeErrors say when memory ran out outside its caching allocator: a CUDA call, cuDNN or
# cuBLAS failing to allocate a workspace, the CPU allocator
_OOM_WORDS = ("out of memory", "alloc_failed", "not enough memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` (or an exception it was raised from) is running out of memory: torch's
    OutOfMemoryError, or a RuntimeError saying so (`_OOM_WORDS`)."""
    seen: set[int] = set()
    inner: BaseException | None = e
    while inner is not None and id(inner) not in seen:
        text = str(inner).lower()
        if isinstance(inner, torch.OutOfMemoryError) or (
            isinstance(inner, RuntimeError) and any(w in text for w in _OOM_WORDS)
        ):
            return True
        seen.add(id(inner))
        inner = inner.__cause__
    return False


def oom_advice(vram: str) -> str:
    """What to try after a job ran out of GPU memory in VRAM mode `vram`."""
    tiles = "--tiled-vae on (the VAE in tiles)"
    if vram == "none":
        return f"try --medvram (or --lowvram), {tiles}, or a smaller size or batch"
    if vram == "medvram":
        return f"try --lowvram, {tiles}, or a smaller size or batch"
    return f"try {tiles}, or a smaller size or batch (already --lowvram)"


def choose_precision(
    config: AppConfig, cuda_available: bool | None = None, free: FreeVram = free_vram
) -> Precision:
    """The device, dtypes and VRAM mode (config.vram; 'auto' from the GPU's free memory) of one worker."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if config.use_cpu or not cuda:
        if config.precision == "bf16" and not config.no_half:  # opt-in: the CPU's fast half precision
            return Precision("cpu", torch.bfloat16, torch.float32 if config.no_half_vae else torch.bfloat16)
        return Precision("cpu", torch.float32, torch.float32)
    if config.no_half or config.precision == "full":
        dtype = torch.float32
    elif config.precision == "bf16":
        dtype = torch.bfloat16
    else:
        dtype = torch.float16
    vae_dtype = torch.float32 if config.no_half_vae else dtype
    return Precision("cuda", dtype, vae_dtype, resolve_vram(config.vram, "cuda", free)[0])


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
    free: FreeVram = free_vram,
) -> list[Precision]:
    """One Precision per job worker: one per CUDA device in `device_ids` (None: every visible one), or
    `cpu_workers` CPU workers when the models run on the CPU (--use-cpu, or no CUDA device); each GPU
    worker's VRAM mode from its own device's free memory under --vram auto. Raises ValueError naming
    the flag for a device that does not exist or a combination that cannot work."""
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if cpu_workers < 1:
        raise ValueError(f"--workers: must be 1 or more, got {cpu_workers}")
    base = choose_precision(config, cuda_available=count > 0, free=free)
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
    out = []
    for i in ids:
        device = f"cuda:{i}"
        out.append(dataclasses.replace(base, device=device, vram=resolve_vram(config.vram, device, free)[0]))
    return out
