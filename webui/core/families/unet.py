"""The denoiser call of the UNet families (SD1, SD2, SDXL), as diffusers' pipelines make it.

    unet(cat(x, image_cond), t, encoder_hidden_states=embeds,
         added_cond_kwargs={"text_embeds": pooled, "time_ids": ids} (SDXL), **hook inputs)

and SDXL's size conditioning: time ids (original size, crop top-left, target size), or for the refiner
(original size, crop, aesthetic score) with one row per UNet row, negative and positive scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from webui.core.models.fused_layout import Fused
from webui.core.models.ldm_layout import LayoutError, rename, unet_rules
from webui.core.sampling.model_inputs import ModelInputs

if TYPE_CHECKING:
    from webui.core.prompts.encode import Conditioning


@dataclass(frozen=True)
class UNetCall:
    """encoder_hidden_states, SDXL's added conditioning when the prompts carry pooled vectors."""

    def text_inputs(
        self, groups: Sequence[Conditioning], time_ids: torch.Tensor | None, device: torch.device
    ) -> dict[str, Any]:
        embeds = torch.cat([g.embeds for g in groups])
        if groups[0].pooled is None:
            return {"encoder_hidden_states": embeds, "added_cond_kwargs": None}
        if time_ids is None or any(g.pooled is None for g in groups):
            raise ValueError("an SDXL model needs pooled embeddings and time ids for every prompt")
        pooled = torch.cat([g.pooled for g in groups if g.pooled is not None])
        ids = time_ids.to(device=device, dtype=embeds.dtype)
        added = {"text_embeds": pooled, "time_ids": ids.repeat(pooled.shape[0] // ids.shape[0], 1)}
        return {"encoder_hidden_states": embeds, "added_cond_kwargs": added}

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        x = inputs.sample
        if inputs.image_cond is not None:  # inpainting UNets: mask and masked-image latents as channels
            x = torch.cat([x, inputs.image_cond], dim=1)
        out = inputs.model(x, inputs.timestep, **inputs.kwargs, **inputs.extra, return_dict=False)
        return out[0]  # type: ignore[no-any-return]


UNET_CALL = UNetCall()


def ldm_names(unet: Any) -> list[Fused]:
    """The LDM name of each weight of a loaded UNet (SDXL LoRA trainers write these); none when its
    config has no LDM layout."""
    try:
        rules = unet_rules(unet.config)
    except (LayoutError, KeyError, TypeError):
        return []
    out = []
    for name, module in unet.named_modules():
        if not isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            continue
        try:
            out.append(Fused(rename(f"{name}.weight", rules), (f"{name}.weight",)))
        except LayoutError:
            continue
    return out


def target_size_ids(width: int, height: int, batch: int = 1, guided: bool = False) -> torch.Tensor:
    """SDXL's size and crop conditioning: original size, crop top-left (0, 0), target size (one row)."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


@dataclass(frozen=True)
class AestheticScoreIds:
    """The SDXL refiner's rows: size, crop, then an aesthetic score that differs between the negative
    and positive prompts, so one row per UNet row: [negative x batch, positive x batch] when guided."""

    negative: float = 2.5  # diffusers' SDXL img2img defaults
    positive: float = 6.0

    def __call__(self, width: int, height: int, batch: int, guided: bool) -> torch.Tensor:
        rows = [[height, width, 0, 0, self.negative]] * batch if guided else []
        rows += [[height, width, 0, 0, self.positive]] * batch
        return torch.tensor(rows, dtype=torch.float32)
