"""The denoiser calls of the flow-matching families, as diffusers' pipelines make them.

    SD3 (MMDiT):  transformer(x, t, encoder_hidden_states=embeds, pooled_projections=pooled)
    Flux:         transformer(pack(x), t / 1000, guidance=g, pooled_projections=pooled,
                              encoder_hidden_states=embeds, txt_ids=0, img_ids=(0, row, col))
                  then unpack: Flux sees 2x2 latent patches as 64-channel tokens.

The loop and the scheduler see plain (B, 16, h, w) latents for both; Flux's packing lives here only.
Flux dev's distilled guidance scale arrives in `kwargs["guidance"]` (a float; None for schnell).

`model_kwargs(inputs)` is what the transformer gets for `inputs` (hooks' `extra` aside) and
`model_latents(latents)` latents as it sees them (Flux: packed): a hook that runs a model beside the
transformer (an SD3 / Flux ControlNet) gives it exactly the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from webui.core.sampling.model_inputs import ModelInputs

if TYPE_CHECKING:
    from webui.core.prompts.encode import Conditioning


def _text(groups: Sequence[Conditioning]) -> dict[str, Any]:
    if any(g.pooled is None for g in groups):
        raise ValueError("a flow-matching model needs pooled text embeddings for every prompt")
    return {
        "encoder_hidden_states": torch.cat([g.embeds for g in groups]),
        "pooled_projections": torch.cat([g.pooled for g in groups if g.pooled is not None]),
    }


@dataclass(frozen=True)
class SD3Call:
    def text_inputs(
        self, groups: Sequence[Conditioning], time_ids: torch.Tensor | None, device: torch.device
    ) -> dict[str, Any]:
        return _text(groups)

    def model_kwargs(self, inputs: ModelInputs) -> dict[str, Any]:
        x = inputs.sample
        return {"hidden_states": x, "timestep": inputs.timestep.expand(x.shape[0]), **inputs.kwargs}

    def model_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        out = inputs.model(**self.model_kwargs(inputs), **inputs.extra, return_dict=False)
        return out[0]  # type: ignore[no-any-return]


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch one token (diffusers' _pack_latents)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` for latents of h x w."""
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h/2 * w/2, 3) position ids of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class FluxCall:
    def text_inputs(
        self, groups: Sequence[Conditioning], time_ids: torch.Tensor | None, device: torch.device
    ) -> dict[str, Any]:
        return _text(groups)

    def model_kwargs(self, inputs: ModelInputs) -> dict[str, Any]:
        """The transformer's inputs; `guidance` is None when `inputs.model` has no guidance embedder
        (schnell), else the distilled guidance scale per row."""
        x = inputs.sample
        b, _, h, w = x.shape
        kwargs = dict(inputs.kwargs)
        scale = kwargs.pop("guidance", None)
        embeds = kwargs["encoder_hidden_states"]
        guidance = None
        if getattr(getattr(inputs.model, "config", None), "guidance_embeds", False):
            if scale is None:
                raise ValueError("this Flux model takes a distilled guidance scale")
            guidance = torch.full((b,), float(scale), device=x.device, dtype=torch.float32)
        return {
            "hidden_states": pack(x),
            "timestep": inputs.timestep.expand(b).to(x.dtype) / 1000,
            "guidance": guidance,
            "txt_ids": torch.zeros(embeds.shape[1], 3, device=x.device, dtype=x.dtype),
            "img_ids": image_ids(h, w, x.device, x.dtype),
            **kwargs,
        }

    def model_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return pack(latents)

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        h, w = inputs.sample.shape[-2:]
        out = inputs.model(**self.model_kwargs(inputs), **inputs.extra, return_dict=False)
        return unpack(out[0], h, w)


SD3_CALL = SD3Call()
FLUX_CALL = FluxCall()
