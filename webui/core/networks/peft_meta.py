"""The LoRA scale of diffusers/peft files, read from their safetensors metadata.

Files saved by diffusers (`save_lora_weights(..., unet_lora_adapter_metadata=config.to_dict())`, and
`save_lora_adapter`) carry no `.alpha` tensors; their peft `LoraConfig` travels as JSON in the header
under `lora_adapter_metadata`: keyed `unet.lora_alpha` (`transformer.lora_alpha` for SD3 and Flux),
`text_encoder.r`, ... (per component) or, from a
single model, unprefixed `lora_alpha`, `r`. Without that metadata the scale is 1 (alpha = rank), which is
what diffusers assumes too.

The scale of a module is alpha / rank with, as peft computes it:
- alpha: the first `alpha_pattern` key that matches the module's dotted name (`(.*\\.)?(key)$`), else
  `lora_alpha`;
- rank: the file's lora_A rows for that module (rank_pattern only describes those shapes);
- `use_rslora`: alpha / sqrt(rank) instead.
`ModulePatch` divides its `alpha` by the rank, so `alpha_for` returns the alpha that gives that scale.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "lora_adapter_metadata"
# metadata scope -> the component it configures (a flow model's transformer is the "unet" component)
_SCOPES = {
    "unet": "unet",
    "transformer": "unet",
    "text_encoder": "text_encoder",
    "text_encoder_2": "text_encoder_2",
    "text_encoder_3": "text_encoder_3",
}


@dataclass(frozen=True)
class PeftConfigs:
    """The LoraConfig of each component (or one for all), as the file's metadata gives it."""

    by_component: Mapping[str, Mapping[str, Any]]
    shared: Mapping[str, Any]

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> PeftConfigs | None:
        raw = (metadata or {}).get(METADATA_KEY)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                return None
        if not isinstance(raw, Mapping):
            return None
        scoped: dict[str, dict[str, Any]] = {}
        shared: dict[str, Any] = {}
        for key, value in raw.items():
            head, dot, rest = str(key).partition(".")
            if dot and head in _SCOPES:
                scoped.setdefault(_SCOPES[head], {})[rest] = value
            else:
                shared[str(key)] = value
        if not scoped and not shared:
            return None
        return cls(scoped, shared)

    def alpha_for(self, component: str, module: str, rank: int) -> float | None:
        """The alpha (for alpha / rank) of this dotted module of a component; None when not given."""
        config = self.by_component.get(component, self.shared)
        alpha: Any = config.get("lora_alpha")
        pattern = config.get("alpha_pattern")
        if isinstance(pattern, Mapping):
            for key, value in pattern.items():
                try:
                    if re.match(rf"(.*\.)?({key})$", module):
                        alpha = value
                        break
                except re.error:
                    continue
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            return None
        if config.get("use_rslora") is True and rank > 0:
            return float(alpha) * math.sqrt(rank)  # scale alpha / sqrt(rank) = (alpha * sqrt(rank)) / rank
        return float(alpha)
