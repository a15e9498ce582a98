"""Live previews of the image being made, by the method the `show_progress_type` setting names (A1111's
names):

    "Approx cheap"  the family's linear latent -> RGB factors (families/<family>.py), at latent size:
                    costs nothing; Flux's latents are unpacked already (the loop keeps them as (C, h, w))
    "TAESD"         the tiny autoencoder of the family's latent space (diffusers' AutoencoderTiny) when its
                    weights are in models/VAE-approx/<name>/ (a diffusers folder: config.json and the
                    weights; <name> is taesd for SD1/SD2, taesdxl, taesd3 or taef1), at full size; the
                    cheap preview when they are not there
    "Approx NN"     A1111's own small approximation network is not supported: TAESD when its weights are
                    there, else the cheap preview
    "Full"          the model's own VAE on the first image: exact and as slow as the final decode
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from webui.core import families
from webui.core.models.components import Components
from webui.core.tasks.images import cheap_preview, decode, to_pil

log = logging.getLogger(__name__)

PREVIEW_TYPES = ("Full", "Approx NN", "Approx cheap", "TAESD")
DEFAULT = "Approx cheap"


class Previews:
    """Makes previews; keeps the TAESD models it loaded (by folder and change time) for later jobs."""

    def __init__(self, vae_approx_dir: Path) -> None:
        self.folder = vae_approx_dir
        self._taesd: dict[Path, tuple[int, Any]] = {}

    def taesd_folder(self, parts: Components) -> Path | None:
        """The TAESD of this model's latent space, when its folder is in models/VAE-approx."""
        name = families.of(parts).latent.taesd
        folder = self.folder / name
        return folder if name and (folder / "config.json").is_file() else None

    def make(self, latents: torch.Tensor, parts: Components, kind: str) -> Image.Image:
        """A picture of the first image of a batch of (B, C, h, w) latents, by the method `kind`."""
        if kind not in PREVIEW_TYPES:
            raise ValueError(f"show_progress_type must be one of {', '.join(PREVIEW_TYPES)}, got {kind!r}")
        first = latents[:1]
        if kind == "Full":
            return to_pil(decode(parts.vae, first))[0]
        if kind in ("TAESD", "Approx NN"):
            taesd = self._load(parts)
            if taesd is not None:
                return to_pil(_decode_tiny(taesd, first))[0]
        return cheap_preview(first, families.of(parts).latent)

    def _load(self, parts: Components) -> Any | None:
        folder = self.taesd_folder(parts)
        if folder is None:
            return None
        stamp = (folder / "config.json").stat().st_mtime_ns
        cached = self._taesd.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        from diffusers import AutoencoderTiny

        tiny: Any = AutoencoderTiny  # diffusers' loaders are untyped
        try:
            model: Any = tiny.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:  # a broken folder: the cheap preview, and one line in the log
            log.warning("TAESD in %s cannot be loaded (%s); cheap previews are shown", folder, e)
            self._taesd[folder] = (stamp, None)
            return None
        model.eval().requires_grad_(False)
        self._taesd[folder] = (stamp, model)
        return model


@torch.no_grad()
def _decode_tiny(taesd: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents as the denoiser sees them to a picture in -1..1, as a diffusers pipeline would use the tiny
    autoencoder as its VAE (its own scaling and shift; 1 and 0 for the TAESDs of SD1/SD2/SDXL)."""
    p = next(taesd.parameters())
    z = latents.to(p.device, p.dtype) / taesd.config.scaling_factor
    shift = getattr(taesd.config, "shift_factor", None)
    if shift:
        z = z + shift
    out: torch.Tensor = taesd.decode(z, return_dict=False)[0]
    return out
