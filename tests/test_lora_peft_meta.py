"""diffusers/peft LoRA files carry their alpha in the safetensors metadata (`lora_adapter_metadata`):
files written by diffusers' own `save_lora_weights` scale as their LoraConfig says (lora_alpha,
alpha_pattern, use_rslora), and as a kohya file with the same alpha does."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from tests.test_lora_apply import models, params, ref, run_with  # noqa: F401 - models is a fixture
from webui.core.models.components import Components
from webui.core.networks.peft_meta import PeftConfigs
from webui.core.networks.tiny import tiny_lora_state_dict, write_tiny_lora

RANK = 2


def _diffusers_file(tmp: Path, c: Components, config: dict[str, Any], seed: int = 3) -> Path:
    """The tiny network in peft names, saved by diffusers with `config` as both components' metadata."""
    sd = tiny_lora_state_dict(c, "peft", RANK, seed)
    unet = {k.removeprefix("unet."): v for k, v in sd.items() if k.startswith("unet.")}
    te = {k.removeprefix("text_encoder."): v for k, v in sd.items() if k.startswith("text_encoder.")}
    StableDiffusionPipeline.save_lora_weights(
        tmp,
        unet_lora_layers=unet,
        text_encoder_lora_layers=te,
        unet_lora_adapter_metadata=dict(config),
        text_encoder_lora_adapter_metadata=dict(config),
        safe_serialization=True,
        weight_name="peft-lora.safetensors",
    )
    return tmp / "peft-lora.safetensors"


def _deltas(c: Components, path: Path) -> dict[str, torch.Tensor]:
    base = params(c)
    _, _, patched = run_with(c, [(ref(path), 1.0, 1.0)])
    return {k: patched[k] - base[k] for k in base if not torch.equal(patched[k], base[k])}


def test_lora_alpha_from_metadata_matches_a_kohya_file_with_that_alpha(
    models: dict[str, Components],  # noqa: F811
    tmp_path: Path,
) -> None:
    c = models["sd1"]
    peft = _diffusers_file(tmp_path, c, {"r": RANK, "lora_alpha": 1, "alpha_pattern": {}, "rank_pattern": {}})
    assert not any(k.endswith(".alpha") for k in load_file(str(peft)))  # the scale is only in metadata
    kohya = write_tiny_lora(tmp_path / "kohya.safetensors", c, "kohya", rank=RANK, seed=3, alpha=1)
    without = write_tiny_lora(tmp_path / "plain-peft.safetensors", c, "peft", rank=RANK, seed=3)
    a, b, plain = _deltas(c, peft), _deltas(c, kohya), _deltas(c, without)
    assert a.keys() == b.keys() == plain.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)
        torch.testing.assert_close(a[k] * 2, plain[k], rtol=1e-5, atol=1e-7, msg=k)  # alpha 1 of rank 2


def test_alpha_pattern_and_rslora(models: dict[str, Components], tmp_path: Path) -> None:  # noqa: F811
    c = models["sd1"]
    plain = _deltas(c, write_tiny_lora(tmp_path / "plain.safetensors", c, "peft", rank=RANK, seed=3))
    config = {"r": RANK, "lora_alpha": 2, "alpha_pattern": {"attn1.to_q": 6}, "use_rslora": False}
    patterned = _deltas(c, _diffusers_file(tmp_path / "p", c, config))
    for k, d in plain.items():
        factor = 3.0 if k.startswith("unet.") and k.endswith("attn1.to_q.weight") else 1.0
        torch.testing.assert_close(patterned[k], d * factor, rtol=1e-5, atol=1e-7, msg=k)
    assert any(k.endswith("attn1.to_q.weight") for k in plain)
    rs = _deltas(c, _diffusers_file(tmp_path / "rs", c, {"r": RANK, "lora_alpha": 2, "use_rslora": True}))
    for k, d in plain.items():  # scale alpha / sqrt(r) = sqrt(2) instead of alpha / r = 1
        torch.testing.assert_close(rs[k], d * math.sqrt(2), rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize(
    ("meta", "component", "module", "expected"),
    [
        (None, "unet", "a.to_q", None),
        ({"lora_adapter_metadata": "not json"}, "unet", "a.to_q", None),
        ({"lora_adapter_metadata": {"lora_alpha": 8}}, "text_encoder", "x.q_proj", 8.0),  # unprefixed: all
        ({"lora_adapter_metadata": {"unet.lora_alpha": 8}}, "text_encoder", "x.q_proj", None),
        ({"lora_adapter_metadata": {"unet.lora_alpha": "8"}}, "unet", "x.to_q", None),  # not a number
        (
            {"lora_adapter_metadata": {"unet.lora_alpha": 4, "unet.alpha_pattern": {"to_[qk": 1}}},
            "unet",
            "to_q",
            4.0,
        ),
        ({"lora_adapter_metadata": '{"text_encoder_2.lora_alpha": 16}'}, "text_encoder_2", "m.fc1", 16.0),
    ],
)
def test_metadata_parsing_is_defensive(
    meta: Any, component: str, module: str, expected: float | None
) -> None:
    configs = PeftConfigs.from_metadata(meta)
    assert (configs.alpha_for(component, module, RANK) if configs else None) == expected
