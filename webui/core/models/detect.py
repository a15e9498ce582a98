"""Which architecture a single-file checkpoint is, from its keys and shapes (and a sidecar yaml).

diffusers' own guesser calls small SDXL and SD2 files "v1", so we decide ourselves, from facts of the
original (LDM) layout:

- SDXL base: a second embedder (`conditioner.embedders.1.model.*`) or the UNet's `label_emb`;
- SDXL refiner: an OpenCLIP embedder at `conditioner.embedders.0.model.*` and no second one;
- SD2: OpenCLIP at `cond_stage_model.model.*`;
- SD1: CLIP at `cond_stage_model.transformer.*`;
- inpainting: a 9-channel UNet input; instruct-pix2pix (SD1 only): an 8-channel one;
- SD3 / SD3.5 and Flux.1 (dev, schnell): their transformers' blocks, bare or under
  `model.diffusion_model.` (`flow_components.detect_flow`, with `flow_loader`'s marks).

v-prediction cannot be read from weights: it comes from the sidecar `name.yaml` (A1111's convention,
`parameterization: "v"`) or a `v_pred` marker tensor that some trainers add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webui.core import families
from webui.core.families import sd1, sd2, sdxl
from webui.core.models.checkpoint_file import CheckpointError

UNET = sd1.UNET_KEYS
SD1_TE = sd1.TEXT_KEYS
SD2_TE = sd2.TEXT_KEYS
SDXL_TE1 = sdxl.CLIP_KEYS
SDXL_TE2 = sdxl.OPENCLIP_KEYS
REFINER_TE = sdxl.REFINER_KEYS
UNET_LATENT_CHANNELS = sd1.LATENT.channels  # every UNet family's latents (SD1, SD2, SDXL)

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Detected:
    family: str  # a family group: sd1 | sd2 | sdxl | sdxl-refiner | sd3 | flux
    inpaint: bool
    prediction_type: str  # epsilon | v_prediction | flow
    variant: str | None = None  # the arch itself, where the weights tell it (sd3.5, flux-schnell...)

    @property
    def arch(self) -> families.Family:
        """The family (and shipped config) this checkpoint is built as."""
        if self.variant is not None:
            return families.family(self.variant)
        return families.pick(self.family, self.inpaint, self.prediction_type)

    @property
    def base_config(self) -> str:
        """The shipped config folder this checkpoint starts from."""
        return self.arch.arch

    @property
    def label(self) -> str:
        return self.arch.label(self.inpaint, self.prediction_type)


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _what_else(shapes: Shapes) -> str:
    keys = list(shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_")) or ".lora_" in k for k in keys):
        return "it looks like a LoRA: put it in models/Lora"
    if any(k.startswith(("encoder.", "first_stage_model.encoder.")) for k in keys) and not _has_prefix(
        shapes, UNET
    ):
        return "it looks like a VAE: put it in models/VAE"
    if "string_to_param" in keys or "emb_params" in keys or set(keys) <= {"clip_l", "clip_g"}:
        return "it looks like a textual-inversion embedding: put it in embeddings/"
    return "no Stable Diffusion UNet/text-encoder keys were found"


def read_sidecar_yaml(checkpoint: Path) -> dict[str, Any] | None:
    """The original LDM config beside a checkpoint (`name.yaml`), if any."""
    path = checkpoint.with_suffix(".yaml")
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(path, f"cannot read the sidecar config: {e}") from e
    return data if isinstance(data, dict) else None


def _yaml_params(sidecar: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not sidecar:
        return {}
    model = sidecar.get("model")
    params = model.get("params") if isinstance(model, dict) else None
    return params if isinstance(params, dict) else {}


def detect(path: Path, shapes: Shapes, sidecar: Mapping[str, Any] | None = None) -> Detected:
    """Decide the architecture of a single-file checkpoint, or raise CheckpointError saying why not."""
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        raise CheckpointError(path, f"unknown architecture: {_what_else(shapes)}")
    if _has_prefix(shapes, SDXL_TE2) or (
        UNET + "label_emb.0.0.weight" in shapes and not _has_prefix(shapes, REFINER_TE)
    ):
        family = "sdxl"
    elif _has_prefix(shapes, REFINER_TE):
        family = "sdxl-refiner"
    elif _has_prefix(shapes, SD2_TE):
        family = "sd2"
    elif _has_prefix(shapes, "cond_stage_model.transformer."):
        family = "sd1"
    else:
        raise CheckpointError(path, "unknown architecture: a UNet without a known text encoder")
    edit = families.edit_arch(family) if conv_in[1] == 2 * UNET_LATENT_CHANNELS else None
    if conv_in[1] == 2 * UNET_LATENT_CHANNELS and edit is None:
        raise CheckpointError(path, f"unsupported architecture: an edit (instruct-pix2pix) {family} UNet")
    if conv_in[1] not in (4, 8, 9):
        raise CheckpointError(
            path, f"unknown architecture: UNet takes {conv_in[1]} input channels (4, 8 or 9)"
        )
    params = _yaml_params(sidecar)  # v-prediction: the sidecar yaml or a marker key
    v = params.get("parameterization") == "v" or "v_pred" in shapes
    return Detected(
        family=family,
        inpaint=conv_in[1] == 9,
        prediction_type="v_prediction" if v else "epsilon",
        variant=edit.arch if edit is not None else None,
    )


def detect_folder(
    has_te: bool, has_te2: bool, te_act: str | None, in_channels: int, prediction: str
) -> Detected:
    """The architecture of a diffusers folder, from the text encoders it has and the UNet's inputs:
    no first encoder is the SDXL refiner, two are SDXL, one with gelu is OpenCLIP (SD2), else SD1."""
    if not has_te:
        family = "sdxl-refiner"
    elif has_te2:
        family = "sdxl"
    else:
        family = "sd2" if te_act == "gelu" else "sd1"
    edit = families.edit_arch(family) if in_channels == 2 * UNET_LATENT_CHANNELS else None
    return Detected(family, in_channels == 9, prediction, edit.arch if edit is not None else None)
