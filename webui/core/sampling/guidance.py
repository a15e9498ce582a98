"""How the guided prediction is formed from the model's predictions: a strategy each family chooses.

ClassifierFree (SD1, SD2, SDXL):  eps = eps_u + cfg * sum_i w_i * (eps_c_i - eps_u)
    with one `AND` part (w = 1) the plain CFG formula; no uncond pass at CFG 1 unless the prompt has
    weighted `AND` parts (composable diffusion, as A1111).

InstructPix2Pix (edit models: the UNet also takes the source image's latents):
    eps = eps_u0 + cfg * sum_i w_i * (eps_c_i - eps_ui) + image_cfg * (eps_ui - eps_u0)
    eps_u0: negative prompt, no image (zero latents); eps_ui: negative prompt with the image;
    eps_c_i: each prompt part with the image (A1111's and diffusers' three-branch formula).

Distilled (Flux): no uncond pass at all; the guidance scale is a model input (the family's denoiser
    call reads it, "Distilled CFG Scale") and CFG stays 1. Weighted `AND` parts are averaged by
    their weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from webui.core.prompts.conditioning import ScheduledConditioning
from webui.core.prompts.encode import Conditioning

CondInput = Conditioning | ScheduledConditioning


class Guidance(Protocol):
    def needs_uncond(self, cond: CondInput, cfg_scale: float) -> bool:
        """Whether the negative prompt's prediction is computed (the first group of every step)."""
        ...

    def rows(
        self, groups: list[Conditioning], image_cond: torch.Tensor | None
    ) -> tuple[list[Conditioning], torch.Tensor | None]:
        """The groups the model runs for a step's `groups` ([uncond,] cond_1, ..., cond_k), and the
        image conditioning of their rows (`image_cond` has one row per image)."""
        ...

    def combine(
        self, pred: torch.Tensor, groups: int, weights: list[float], cfg_scale: float
    ) -> torch.Tensor:
        """The guided prediction from `pred`, `groups` equal chunks: [uncond,] cond_1, ..., cond_k."""
        ...


@dataclass(frozen=True)
class ClassifierFree:
    def needs_uncond(self, cond: CondInput, cfg_scale: float) -> bool:
        if isinstance(cond, ScheduledConditioning) and [p.weight for p in cond.parts] != [1.0]:
            return True  # composable diffusion combines every part against the uncond prediction
        return cfg_scale != 1.0

    def rows(
        self, groups: list[Conditioning], image_cond: torch.Tensor | None
    ) -> tuple[list[Conditioning], torch.Tensor | None]:
        return groups, _repeat(image_cond, len(groups))

    def combine(
        self, pred: torch.Tensor, groups: int, weights: list[float], cfg_scale: float
    ) -> torch.Tensor:
        chunks = pred.chunk(groups)
        if groups == 1:  # no uncond pass: the prediction as it is
            return chunks[0]
        pred_uncond = chunks[0]
        if weights == [1.0]:
            return pred_uncond + cfg_scale * (chunks[1] - pred_uncond)
        out = pred_uncond
        for w, pred_cond in zip(weights, chunks[1:], strict=True):
            out = out + (w * cfg_scale) * (pred_cond - pred_uncond)
        return out


CFG = ClassifierFree()


def _repeat(image_cond: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return torch.cat([image_cond] * times) if image_cond is not None else None


@dataclass(frozen=True)
class InstructPix2Pix:
    """Guidance for an edit model: `image_cond` holds the source image's latents (one row per image);
    the loop always runs the negative prompt (step groups [uncond, cond_1, ..., cond_k])."""

    image_cfg_scale: float

    def needs_uncond(self, cond: CondInput, cfg_scale: float) -> bool:
        return True

    def rows(
        self, groups: list[Conditioning], image_cond: torch.Tensor | None
    ) -> tuple[list[Conditioning], torch.Tensor | None]:
        if image_cond is None:
            raise ValueError("an edit model needs the source image's latents (image_cond)")
        uncond, conds = groups[0], groups[1:]
        rows = [torch.zeros_like(image_cond), image_cond] + [image_cond] * len(conds)
        return [uncond, uncond, *conds], torch.cat(rows)

    def combine(
        self, pred: torch.Tensor, groups: int, weights: list[float], cfg_scale: float
    ) -> torch.Tensor:
        chunks = pred.chunk(groups)
        plain, with_image = chunks[0], chunks[1]
        out = plain + self.image_cfg_scale * (with_image - plain)
        for w, pred_cond in zip(weights, chunks[2:], strict=True):
            out = out + (w * cfg_scale) * (pred_cond - with_image)
        return out


@dataclass(frozen=True)
class Distilled:
    def needs_uncond(self, cond: CondInput, cfg_scale: float) -> bool:
        return False

    def rows(
        self, groups: list[Conditioning], image_cond: torch.Tensor | None
    ) -> tuple[list[Conditioning], torch.Tensor | None]:
        return groups, _repeat(image_cond, len(groups))

    def combine(
        self, pred: torch.Tensor, groups: int, weights: list[float], cfg_scale: float
    ) -> torch.Tensor:
        chunks = pred.chunk(groups)
        if groups == 1:
            return chunks[0]
        total = sum(weights) or 1.0
        out = torch.zeros_like(chunks[0])
        for w, pred_cond in zip(weights, chunks, strict=True):
            out = out + (w / total) * pred_cond
        return out


DISTILLED = Distilled()
