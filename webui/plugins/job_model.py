"""The job's loaded model as extensions see it: `JobModel`, a read-only view (plugin API 2).

Hooks that run while a job holds its model (`on_step`, `before_model`, `after_decode`,
`extra_infotext`, `after_save`) may take a `components` argument: this view. It names the parts an
extension needs to build on the model (a ControlNet reads the UNet's config and the device/dtype, an
IP-Adapter the text encoder's width) without handing out the engine's own record. The modules are the
shared, cached ones: read them; to patch one, wrap it for a single call in `before_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from webui.core.models.components import Components


@dataclass(frozen=True)
class JobModel:
    arch: str  # the family's arch name: sd1, sd1-inpaint, sd2, sd2-v, sdxl, sdxl-refiner, sd3, flux-dev...
    label: str  # for people: "SD1", "SDXL", ...
    family: str  # the family group: "SD1", "SDXL", "SD3", "Flux dev", ...
    device: torch.device
    dtype: torch.dtype
    prediction_type: str  # as its scheduler config says: epsilon, v_prediction, flow_prediction...
    unet: Any  # the denoiser of UNet families, else None
    transformer: Any  # the denoiser of SD3/Flux, else None
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    text_encoder_3: Any
    tokenizer: Any
    tokenizer_2: Any
    tokenizer_3: Any

    @property
    def denoiser(self) -> Any:
        return self.unet if self.unet is not None else self.transformer

    @classmethod
    def of(cls, parts: Components) -> JobModel:
        from webui.core import families

        return cls(
            arch=parts.arch,
            label=parts.label,
            family=families.of(parts).group_label,
            device=parts.device,
            dtype=parts.dtype,
            prediction_type=parts.prediction_type,
            unet=parts.unet,
            transformer=parts.transformer,
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            text_encoder_2=parts.text_encoder_2,
            text_encoder_3=parts.text_encoder_3,
            tokenizer=parts.tokenizer,
            tokenizer_2=parts.tokenizer_2,
            tokenizer_3=parts.tokenizer_3,
        )
