"""Requests and results: frozen dataclasses with A1111's field names, validated in one place.

The UI, the API and the command line all translate their inputs into these objects; `validate()` is
the single place where a bad value becomes a `RequestError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MAX_SEED = 2**32 - 1
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 500
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000
MAX_CFG = 100.0
MAX_PROMPT_CHARS = 100_000


class RequestError(ValueError):
    """A request field has a bad value; `field` names it (A1111's name)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _finite(name: str, value: float, lo: float, hi: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RequestError(name, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo:g} and {hi:g}, got {value:g}")


def _int(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(name, f"must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo} and {hi}, got {value}")


@dataclass(frozen=True)
class GenerationRequest:
    """Fields shared by every kind of generation (A1111's StableDiffusionProcessing)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    eta: float | None = None
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    checkpoint: str | None = None  # title, name or hash; None: the default checkpoint
    vae: str | None = None  # None/"Automatic": the checkpoint's own VAE
    save_images: bool = True
    extension_args: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def validate(self) -> None:
        """Raise RequestError for the first bad field; sampler and schedule names are checked too."""
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise RequestError(name, "must be text")
            if len(text) > MAX_PROMPT_CHARS:
                raise RequestError(name, f"is {len(text)} characters long (limit {MAX_PROMPT_CHARS})")
        for name in ("width", "height"):
            value = getattr(self, name)
            _int(name, value, MIN_SIZE, MAX_SIZE)
            if value % 8:
                raise RequestError(name, f"must be a multiple of 8, got {value}")
        _int("steps", self.steps, 1, MAX_STEPS)
        _int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _int("n_iter", self.n_iter, 1, MAX_N_ITER)
        _finite("cfg_scale", self.cfg_scale, 0.0, MAX_CFG)
        _int("seed", self.seed, -1, MAX_SEED)
        _int("subseed", self.subseed, -1, MAX_SEED)
        _finite("subseed_strength", self.subseed_strength, 0.0, 1.0)
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            value = getattr(self, name)
            _int(name, value, -1, MAX_SIZE)
            if value > 0 and value % 8:
                raise RequestError(name, f"must be a multiple of 8, got {value}")
        _int("clip_skip", self.clip_skip, 1, 12)
        if self.eta is not None:
            _finite("eta", self.eta, 0.0, 10.0)
        _finite("s_noise", self.s_noise, 0.0, 10.0)
        _finite("s_churn", self.s_churn, 0.0, 100.0)
        from webui.core.sampling.samplers import UnknownSampler, resolve

        try:
            resolve(self.sampler_name, self.scheduler)
        except UnknownSampler as e:
            raise RequestError(e.field, str(e)) from e

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Txt2ImgRequest(GenerationRequest):
    """txt2img: noise to image. (Hires fix arrives with the img2img issue.)"""


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None


@dataclass(frozen=True)
class GenerationResult:
    request: GenerationRequest
    images: tuple[GeneratedImage, ...]
    model_title: str
    interrupted: bool = False
    grid_path: Path | None = None  # the batch's contact sheet (saved when a run makes several images)

    @property
    def seeds(self) -> list[int]:
        return [i.seed for i in self.images]

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.images if i.path is not None]
