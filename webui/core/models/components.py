"""The parts of one loaded model, and the device/dtype they run in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.core.models.fp8 import has_fp8, to_keeping_fp8
from webui.core.models.offload import compute_place


@dataclass(frozen=True)
class Precision:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    vae_dtype: torch.dtype = torch.float32
    vram: str = "none"  # none | medvram | lowvram: how parts move between RAM and the device (models.offload)

    @property
    def storage(self) -> Precision:
        """Where models are loaded: the device itself, or the CPU when they are offloaded."""
        return self if self.vram == "none" else Precision("cpu", self.dtype, self.vae_dtype, self.vram)


CONV_PARTS = ("unet", "vae")  # the convolutional parts, which channels-last memory speeds up


def wants_channels_last(device: str | torch.device, dtype: torch.dtype) -> bool:
    """Whether a convolutional model on `device` in `dtype` is kept in channels-last memory format: on a
    GPU (cuDNN's fast convolutions take NHWC), and on the CPU in bf16 / fp16 (oneDNN: measured 1.2x on
    an SD1.5 UNet step and 4x on its VAE decode in bf16). In fp32 on the CPU it gains nothing (measured
    0.93x on the UNet), so models stay as they are there and fp32 CPU results do not change."""
    return torch.device(device).type != "cpu" or dtype != torch.float32


def vae_compute_dtype(dtype: torch.dtype, force_upcast: bool) -> torch.dtype:
    """The dtype a VAE runs in when `dtype` is asked for: fp32 instead of fp16 for a VAE whose config
    says `force_upcast` (the SD1/SD2/SDXL VAEs overflow in fp16: black or NaN pictures on a GPU)."""
    return torch.float32 if dtype == torch.float16 and force_upcast else dtype


@dataclass(frozen=True)
class Components:
    """Denoiser, VAE, text encoders and tokenizers of one checkpoint, plus its scheduler config.

    The denoiser is `unet` (SD1/SD2/SDXL) or `transformer` (SD3, Flux; `unet` is None); the family
    (`families.of(parts)`) says which text encoders it has and how they are used. `text_encoder_3` /
    `tokenizer_3` are T5 (SD3 and Flux alike). `sources` names the file each part came from when a
    model is assembled from several files (a transformer-only file plus text encoders and a VAE).
    """

    arch: str  # the family's arch name: sd1, sd1-inpaint, sd2, sd2-v, sdxl, sdxl-refiner, sd3, flux-dev...
    label: str  # for people: "SD1", "SDXL", "SD2 (v)"...
    pipeline_class: str
    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    transformer: Any = None
    text_encoder_3: Any = None
    tokenizer_3: Any = None
    sources: dict[str, Path] = field(default_factory=dict)  # part -> file, for models from several files

    @property
    def denoiser(self) -> Any:
        return self.unet if self.unet is not None else self.transformer

    @property
    def device(self) -> torch.device:
        """Where the denoiser runs, wherever it waits now (models.offload; one parameter look-up at most:
        diffusers' `.device` walks every module)."""
        return compute_place(self.denoiser)[0]

    @property
    def dtype(self) -> torch.dtype:
        return compute_place(self.denoiser)[1]

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    def modules(self) -> dict[str, torch.nn.Module]:
        named = {
            "unet": self.unet,
            "transformer": self.transformer,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "text_encoder_3": self.text_encoder_3,
        }
        return {k: v for k, v in named.items() if v is not None}

    def nbytes(self) -> int:
        total = 0
        for m in self.modules().values():
            for t in list(m.parameters()) + list(m.buffers()):
                total += t.numel() * t.element_size()
        return total

    def to(self, precision: Precision) -> Components:
        """Move every module to the precision's device and dtypes (in place) and return self; fp8
        layers (models.fp8) move but stay fp8."""
        for name, m in self.modules().items():
            dtype = precision.dtype
            if name == "vae":
                dtype = vae_compute_dtype(precision.vae_dtype, getattr(m.config, "force_upcast", False))
            first = next(m.parameters())
            if has_fp8(m):  # fp8 layers stay fp8 and are upcast as they run (models.fp8)
                to_keeping_fp8(m, precision.device, dtype)
            elif first.dtype != dtype or first.device.type != torch.device(precision.device).type:
                # torch's own `to`: diffusers' override warns about fp32-kept modules on every cast,
                # even when the model has none
                torch.nn.Module.to(m, device=precision.device, dtype=dtype)
            if name in CONV_PARTS and wants_channels_last(precision.device, dtype):
                m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # 4-D weights only
            m.eval()
            m.requires_grad_(False)
        return self
