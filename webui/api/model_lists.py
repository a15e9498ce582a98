"""The model lists of `/sdapi/v1`: checkpoints with their family, and Forge's modules (text encoders and
VAEs that split SD3/Flux models are assembled from)."""

from __future__ import annotations

from typing import Any

from webui.core.models.manager import ModelManager


def sd_models(manager: ModelManager) -> list[dict[str, Any]]:
    """A1111's fields, plus `family` (the family's name: "SD1", "SDXL", "SD3.5", "Flux dev"...) and
    `arch` (its config name: "sdxl", "flux-dev"...); both null when the file cannot tell (a `.ckpt`)."""
    out = []
    for f in manager.checkpoints():
        fam = manager.family_of(f)
        out.append(
            {
                "title": f.title,
                "model_name": f.model_name,
                "hash": f.shorthash,
                "sha256": f.sha256,
                "filename": str(f.path),
                "config": None,
                "family": fam.group_label if fam is not None else None,
                "arch": fam.arch if fam is not None else None,
            }
        )
    return out


def sd_modules(manager: ModelManager) -> list[dict[str, str]]:
    """Forge's shape: [{model_name, filename}] for every file in the VAE and text encoder folders."""
    files = (*manager.vaes(), *manager.text_encoders())
    return [{"model_name": f.name, "filename": str(f.path)} for f in files]
