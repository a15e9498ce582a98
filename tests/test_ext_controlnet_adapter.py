"""T2I-Adapter units: files in both layouts, parity with diffusers' StableDiffusionAdapterPipeline, and the
unit rules (zero weight, start/end, control modes) shared with ControlNet units."""

# ruff: noqa: F811  (the parity module's fixtures `cn` and `models` are imported and used by name)

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import StableDiffusionAdapterPipeline
from PIL import Image

from tests.fixtures_controlnet import ADAPTER_KINDS, build_tiny_adapter
from tests.test_ext_controlnet_parity import (  # noqa: F401  (module fixtures used by name)
    SEED,
    SIZE,
    STEPS,
    _one_thread,
    call_state,
    cn,
    control_map,
    models,
    ours,
    pixel_diff_one,
)
from tests.test_parity import CFG, Model, _generators, _shape, fresh_scheduler
from webui.core.models.tiny import unet_config
from webui.core.sampling.loop import HookPoint
from webui.core.sampling.noise import initial_noise

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have:UserWarning"),
    pytest.mark.filterwarnings("ignore:The decode_latents method is deprecated:FutureWarning"),
]


@pytest.mark.parametrize("layout", ["original", "diffusers"])
@pytest.mark.parametrize("kind", list(ADAPTER_KINDS))
def test_adapter_files_load_bit_equal(
    kind: str, layout: str, cn: SimpleNamespace, tiny_adapter_files: dict[tuple[str, str], Path]
) -> None:
    path = tiny_adapter_files[kind, layout]
    model = cn.models.load_control_model(path)
    ref = build_tiny_adapter(kind, 10 + list(ADAPTER_KINDS).index(kind)).state_dict()
    got = model.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert dict(model.config)["adapter_type"] == ADAPTER_KINDS[kind]["adapter_type"]
    assert model.config.in_channels == ADAPTER_KINDS[kind]["in_channels"]
    with pytest.raises(cn.layout.ControlNetFileError, match="a T2I-Adapter, not a ControlNet"):
        cn.models.read_controlnet(path)


def test_adapter_for_the_wrong_base_is_refused(cn: SimpleNamespace, tiny_adapter_files: dict) -> None:
    with pytest.raises(cn.layout.ControlNetFileError, match="T2I-Adapter for SDXL and cannot be used"):
        cn.models.load_control_model(tiny_adapter_files["sdxl", "diffusers"], unet_config("sd1"))
    with pytest.raises(cn.layout.ControlNetFileError, match="T2I-Adapter for SD 1.x"):
        cn.models.load_control_model(tiny_adapter_files["sd1", "original"], unet_config("sdxl"))


def adapter_unit(cn: SimpleNamespace, model: Any, gray: bool = False, **unit: Any) -> Any:
    u = cn.units.ControlUnit(index=0, module="canny", model="tiny-t2i", **unit)
    m = control_map(cn)
    return cn.residuals.ActiveUnit(u, model, cn.images.control_tensor(m, *SIZE, u.resize_mode, gray=gray), m)


def pipeline(model: Model, adapter: Any, image: Image.Image, sampler: str, scale: float) -> tuple:
    parts = model.parts
    pipe = StableDiffusionAdapterPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        adapter=adapter, scheduler=fresh_scheduler(parts, sampler, "Automatic", [SEED]), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    final: dict[str, torch.Tensor] = {}

    def keep(i: int, t: Any, latents: torch.Tensor) -> None:  # this pipeline has the old callback only
        final["latents"] = latents

    out = pipe(
        prompt_embeds=model.cond.embeds, negative_prompt_embeds=model.uncond.embeds, image=image,
        latents=initial_noise(_shape(SIZE), [SEED]), generator=_generators(SIZE, [SEED]),
        num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE[1], width=SIZE[0], output_type="pil",
        adapter_conditioning_scale=scale, callback=keep, callback_steps=1,
    )  # fmt: skip
    return final["latents"], list(out.images)


@pytest.mark.parametrize(("kind", "sampler", "weight"), [("sd1", "Euler", 1.0), ("sd1-gray", "Euler a", 0.6)])
def test_adapter_unit_matches_diffusers_adapter_pipeline(
    kind: str, sampler: str, weight: float, cn: SimpleNamespace, models: dict, tiny_adapter_files: dict
) -> None:
    model = models["sd1"]
    adapter = cn.models.load_control_model(
        tiny_adapter_files[kind, "original"], dict(model.parts.unet.config)
    )
    gray = adapter.config.in_channels == 1
    unit = adapter_unit(cn, adapter, gray=gray, weight=weight)
    mine = ours(model, sampler, [cn.residuals.ControlNetHook([unit])])
    image = unit.control_map.convert("L") if gray else unit.control_map
    ref = pipeline(model, adapter, image, sampler, weight)
    diff = pixel_diff_one(mine[1], ref[1])
    assert diff <= 1, f"max pixel difference {diff}/255"
    torch.testing.assert_close(mine[0], ref[0], rtol=1e-3, atol=1e-3)
    assert pixel_diff_one(mine[1], ours(model, sampler)[1]) >= 3, "the adapter did not change the image"


def test_adapter_zero_weight_end_and_modes(
    cn: SimpleNamespace, models: dict, tiny_adapter_files: dict
) -> None:
    model = models["sd1"]
    adapter = cn.models.load_control_model(
        tiny_adapter_files["sd1", "diffusers"], dict(model.parts.unet.config)
    )
    plain = ours(model, "Euler")[0]
    zero = ours(model, "Euler", [cn.residuals.ControlNetHook([adapter_unit(cn, adapter, weight=0.0)])])[0]
    assert torch.equal(zero, plain)
    late = adapter_unit(cn, adapter, guidance_start=0.8)  # 4 steps: 0.75 < 0.8, never active
    assert torch.equal(ours(model, "Euler", [cn.residuals.ControlNetHook([late])])[0], plain)

    def features(**unit: Any) -> list[torch.Tensor]:
        state = call_state(model)
        cn.residuals.ControlNetHook([adapter_unit(cn, adapter, **unit)])(HookPoint.BEFORE_MODEL, state)
        return state.inputs.extra["down_intrablock_additional_residuals"]

    full = features()
    assert len(full) == 2 and all(f.shape[0] == 2 and torch.equal(f[0], f[1]) for f in full)
    control = features(weight=0.5, control_mode=cn.units.ControlMode.CONTROL)
    scales = cn.residuals.soft_scales(0.5, 2)
    for f, ref, s in zip(control, full, scales, strict=True):
        assert f[0].abs().max() == 0  # the negative prompt's row: no adapter
        torch.testing.assert_close(f[1], ref[1] * s)


def test_prepare_units_reads_adapters_from_the_model_folder(
    cn: SimpleNamespace, models: dict, tiny_adapter_files: dict
) -> None:
    listed = cn.models.list_models(tiny_adapter_files["sd1", "original"].parents[1])
    assert any(m.name == "tiny-t2i-sd1-gray-original" for m in listed)  # listed beside ControlNets
    unet_cfg = dict(models["sd1"].parts.unet.config)
    [unit] = cn.units.parse_units([{"module": "canny", "model": "tiny-t2i-sd1-gray-original"}], models=listed)
    image = control_map(cn).resize((96, 80))
    [ready] = cn.residuals.prepare_units(
        [unit], width=64, height=64, models=listed, init_image=image,
        load=lambda p: cn.models.load_control_model(p, unet_cfg),
    )  # fmt: skip
    assert ready.is_adapter and ready.image.shape == (1, 1, 64, 64)  # a one-channel (sketch) adapter
