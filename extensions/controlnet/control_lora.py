"""Control-LoRA files (Stability AI's `control-lora-*-rank*.safetensors`): a ControlNet stored as the
difference from its base model's UNet, made dense per job from that job's own UNet.

The file, in the original (LDM) key layout without a prefix, holds:

- `lora_controlnet`: a marker tensor (what makes it a Control-LoRA);
- `<module>.up` / `<module>.down` pairs for the encoder's Linear and Conv weights, a rank-r difference:
  `weight = unet_weight + (up.flatten(1) @ down.flatten(1)).reshape(unet_weight.shape)`;
- full `<module>.weight` / `.bias` tensors for everything else it stores: the ControlNet's own parts
  (`input_hint_block.*`, `zero_convs.*`, `middle_block_out.*`) and the biases and norms it retrained.

Any encoder tensor the file leaves out is the UNet's own. `read` renames the file once (cached like any
extension model, as a `ControlLoraWeights` module that moves to the job's device and dtype); `dense`
builds a `ControlNetModel` for one job from that job's UNet. The UNet is only read: every tensor of the
ControlNet is a new one, so nothing the job does to it reaches the UNet or another job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .layout import ControlNetFileError, base_of, check_compatible, infer_config, to_diffusers

MARKER = "lora_controlnet"
_UP, _DOWN = ".up", ".down"
_ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")


def is_control_lora(sd: Mapping[str, Any]) -> bool:
    return MARKER in sd


class ControlLoraWeights(torch.nn.Module):
    """A Control-LoRA's tensors in diffusers' ControlNet key layout: `full` weights and `lora` (up, down)
    pairs by the key of the weight they change. Kept as buffers so the cache moves them."""

    def __init__(
        self, full: Mapping[str, torch.Tensor], lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        super().__init__()
        self.full_keys = tuple(full)
        self.lora_keys = tuple(lora)
        for i, key in enumerate(self.full_keys):
            self.register_buffer(f"full_{i}", full[key])
        for i, key in enumerate(self.lora_keys):
            up, down = lora[key]
            self.register_buffer(f"up_{i}", up)
            self.register_buffer(f"down_{i}", down)

    def full(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"full_{i}") for i, k in enumerate(self.full_keys)}

    def lora(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        pairs = enumerate(self.lora_keys)
        return {k: (getattr(self, f"up_{i}"), getattr(self, f"down_{i}")) for i, k in pairs}

    @property
    def rank(self) -> int:
        return int(self.get_buffer("up_0").shape[1]) if self.lora_keys else 0


def read(sd: Mapping[str, torch.Tensor], name: str) -> ControlLoraWeights:
    """The file's tensors renamed to diffusers' layout; ControlNetFileError when it is not a usable
    Control-LoRA (an unpaired up/down, no hint encoder)."""
    ups = {k[: -len(_UP)] for k in sd if k.endswith(_UP)}
    downs = {k[: -len(_DOWN)] for k in sd if k.endswith(_DOWN)}
    if ups != downs:
        odd = sorted(ups ^ downs)[0]
        raise ControlNetFileError(f"{name}: Control-LoRA pair {odd}.up / .down is incomplete")
    # Rename with the ControlNet converter: each low-rank pair stands in as the weight it changes (a
    # placeholder tensor whose identity is followed through the renaming).
    placeholders: dict[int, str] = {}
    probe: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == MARKER or key.endswith((_UP, _DOWN)):
            continue
        probe[key] = value
    for base in ups:
        marker = torch.empty(0)
        placeholders[id(marker)] = base
        probe[f"{base}.weight"] = marker
    # The converter takes a bare layout only when it sees time_embed.0.weight, and counts the input
    # blocks it sees: fillers stand for what the file leaves to the UNet (and are dropped after).
    fillers: set[int] = set()

    def filler(key: str) -> None:
        if not any(k == key or k.startswith(key + ".") for k in probe):
            value = torch.empty(0)
            fillers.add(id(value))
            probe[key + ".weight" if not key.endswith(".weight") else key] = value

    filler("time_embed.0.weight")
    zero_convs = {int(k.split(".")[1]) for k in probe if k.startswith("zero_convs.")}
    for i in range(max(zero_convs, default=-1) + 1):
        filler(f"input_blocks.{i}")
    try:
        renamed = to_diffusers(probe)
    except ControlNetFileError as e:
        raise ControlNetFileError(f"{name}: {e}") from e
    full: dict[str, torch.Tensor] = {}
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, value in renamed.items():
        base = placeholders.get(id(value))
        if base is not None:
            lora[key] = (sd[base + _UP], sd[base + _DOWN])
        elif id(value) not in fillers:
            full[key] = value
    return ControlLoraWeights(full, lora)


@torch.no_grad()
def dense_state(weights: ControlLoraWeights, unet: Any, name: str) -> dict[str, torch.Tensor]:
    """The ControlNet's state dict for `unet`: the UNet's encoder tensors (copied), the file's full
    tensors over them, and each low-rank difference added to the UNet's weight."""
    unet_sd = unet.state_dict()
    out = {k: v.clone() for k, v in unet_sd.items() if k.startswith(_ENCODER)}
    for key, value in weights.full().items():
        out[key] = value.clone()
    for key, (up, down) in weights.lora().items():
        base = unet_sd.get(key)
        if base is None:
            raise ControlNetFileError(
                f"{name}: a Control-LoRA for another base model (the checkpoint's UNet has no {key}); "
                "pick one made for the checkpoint's base model"
            )
        delta = up.flatten(1).to(base.dtype) @ down.flatten(1).to(base.dtype)
        if delta.numel() != base.numel():
            raise ControlNetFileError(
                f"{name}: a Control-LoRA for another base model ({key} is {tuple(base.shape)} in the "
                f"checkpoint, {delta.shape[0]}x{delta.shape[1]} in the file); pick one made for the "
                "checkpoint's base model"
            )
        out[key] = base + delta.reshape(base.shape)
    return out


def dense(weights: ControlLoraWeights, unet: Any, name: str) -> Any:
    """A `ControlNetModel` (eval mode, on the UNet's device and dtype) for one job's `unet`."""
    from diffusers import ControlNetModel

    sd = dense_state(weights, unet, name)
    unet_config = dict(unet.config)
    try:
        cfg = infer_config(sd, unet_config)
    except (KeyError, StopIteration) as e:
        raise ControlNetFileError(f"{name}: not a complete Control-LoRA ({e})") from e
    check_compatible(cfg, base_of(sd), unet_config, name)
    cfg["global_pool_conditions"] = False
    with torch.device("meta"):
        model = ControlNetModel(**cfg)
    try:
        model.load_state_dict({k: sd[k] for k in model.state_dict()}, strict=True, assign=True)
    except KeyError as e:
        raise ControlNetFileError(f"{name}: the Control-LoRA and the checkpoint leave {e} unset") from e
    except RuntimeError as e:
        raise ControlNetFileError(f"{name}: weights do not fit: {str(e).splitlines()[0]}") from e
    return model.eval().requires_grad_(False)
