"""One call of the denoiser: its inputs as a typed, mutable value, and the protocol a family's call obeys.

The loop builds `ModelInputs` once per step for the whole batch, laid out group by group
([uncond_0..uncond_n, cond_0..cond_n, ...]), fires the BEFORE_MODEL hooks with it, then hands it to the
family's `DenoiserCall` (one call, or one per image; `rows` selects an image's rows).

Hooks add inputs in `extra` for this job only, e.g. ControlNet residuals
(`down_block_additional_residuals`, `mid_block_additional_residual`), T2I-Adapter features
(`down_intrablock_additional_residuals`) or `cross_attention_kwargs`; they may also wrap `model`
(a per-job patch). Every tensor in `kwargs` and `extra` whose first dimension is the batch's row count
is per-row (sliced with the rows); anything else is passed as it is. The text inputs in `kwargs` are
shared by the steps that use the same prompts: replace a value, never change a tensor or nested dict
in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from webui.core.prompts.encode import Conditioning


@dataclass
class ModelInputs:
    model: Any  # the denoiser module (a hook may replace it by a patched wrapper for this call)
    sample: torch.Tensor  # scaled latents, one row per (group, image)
    timestep: torch.Tensor
    kwargs: dict[str, Any]  # what the family's call built: encoder_hidden_states, added_cond_kwargs...
    image_cond: torch.Tensor | None = None  # inpainting denoisers: mask + masked-image latents per row
    extra: dict[str, Any] = field(default_factory=dict)  # added by hooks (ControlNet residuals...)

    @property
    def rows(self) -> int:
        return int(self.sample.shape[0])

    def select(self, idx: Sequence[int]) -> ModelInputs:
        """The inputs of some rows only (per-row tensors sliced, everything else shared)."""
        n = self.rows
        return replace(
            self,
            sample=self.sample[list(idx)],
            kwargs=_select(self.kwargs, idx, n),
            image_cond=self.image_cond[list(idx)] if self.image_cond is not None else None,
            extra=_select(self.extra, idx, n),
        )


def _select(value: Any, idx: Sequence[int], rows: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[list(idx)] if value.dim() > 0 and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: _select(v, idx, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_select(v, idx, rows) for v in value)
    return value


class DenoiserCall(Protocol):
    """How a family turns conditioning into model inputs and calls its denoiser."""

    def text_inputs(
        self, groups: Sequence[Conditioning], time_ids: torch.Tensor | None, device: torch.device
    ) -> dict[str, Any]:
        """The model's text (and size) inputs for a step's conditioning groups, one row per group row."""
        ...

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        """The model's prediction for `inputs`, one row per input row."""
        ...
