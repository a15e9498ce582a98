"""ControlNet residuals through the core's txt2img loop: parity with diffusers' ControlNet pipelines, and
what a unit does (changes the image, zero weight changes nothing, start/end, two units, control modes).

Both sides get the same tiny model, tiny ControlNet (loaded by the extension from its original-layout
file), control map, embeddings, noise and scheduler, as in tests/test_parity.py. One image per run, so
our per-image UNet batch ([uncond, cond]) is the pipeline's batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline
from PIL import Image, ImageDraw

from tests.fixtures_controlnet import extension_modules
from tests.test_parity import CFG, Model, _generators, _rows, _shape, fresh_scheduler
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.prompts.encode import encode_prompts
from webui.core.sampling.loop import HookPoint, ModelCallState
from webui.core.sampling.noise import initial_noise
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.txt2img import run_txt2img

SIZE = (64, 64)
SEED = 4321
STEPS = 4

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have:UserWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return extension_modules(tmp_path_factory.mktemp("cn-ext"))


@pytest.fixture(scope="module")
def models(tiny_files: dict[str, Path]) -> dict[str, Model]:
    out = {}
    for arch in ("sd1", "sdxl"):
        parts = load_model(tiny_files[arch], Precision())
        out[arch] = Model(parts, encode_prompts(parts, ["a red house"]), encode_prompts(parts, ["blurry"]))
    return out


@pytest.fixture(scope="module")
def controlnets(cn: SimpleNamespace, models: dict[str, Model], tiny_controlnet_files: dict) -> dict[str, Any]:
    return {
        arch: cn.models.load_controlnet(
            tiny_controlnet_files[arch, "ldm"], dict(models[arch].parts.unet.config)
        )
        for arch in ("sd1", "sdxl")
    }


def control_map(cn: SimpleNamespace) -> Image.Image:
    image = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(image)
    d.rectangle((8, 8, 40, 56), outline="black", width=3)
    d.ellipse((30, 4, 60, 34), fill="black")
    return cn.preprocess.run("canny", image, SIZE[1], 100, 200)


def active(cn: SimpleNamespace, model: Any, **unit: Any) -> Any:
    u = cn.units.ControlUnit(index=unit.pop("index", 0), module="canny", model="tiny", **unit)
    m = control_map(cn)
    return cn.residuals.ActiveUnit(u, model, cn.images.control_tensor(m, *SIZE, u.resize_mode), m)


def ours(
    model: Model, sampler: str, hooks: Sequence[Any] = (), cfg: float = CFG, steps: int = STEPS
) -> tuple:
    parts = model.parts
    latents = run_txt2img(
        parts, fresh_scheduler(parts, sampler, "Automatic", [SEED]), initial_noise(_shape(SIZE), [SEED]),
        _generators(SIZE, [SEED]), _rows(model.cond, 0), _rows(model.uncond, 0), steps=steps,
        cfg_scale=cfg, width=SIZE[0], height=SIZE[1], model_hooks=list(hooks),
    )  # fmt: skip
    return latents, to_pil(decode(parts.vae, latents))


def theirs(model: Model, controlnet: Any, image: Image.Image, sampler: str, **kw: Any) -> tuple:
    parts = model.parts
    common: dict[str, Any] = dict(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        controlnet=controlnet, scheduler=fresh_scheduler(parts, sampler, "Automatic", [SEED]),
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if parts.text_encoder_2 is None:
        pipe = StableDiffusionControlNetPipeline(
            **common, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    else:
        pipe = StableDiffusionXLControlNetPipeline(
            **common, text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2,
            force_zeros_for_empty_prompt=False, add_watermarker=False,
        )  # fmt: skip
        extra = dict(
            pooled_prompt_embeds=model.cond.pooled, negative_pooled_prompt_embeds=model.uncond.pooled
        )
    pipe.set_progress_bar_config(disable=True)
    final: dict[str, torch.Tensor] = {}

    def keep(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        final["latents"] = kwargs["latents"]
        return kwargs

    out = pipe(
        prompt_embeds=model.cond.embeds, negative_prompt_embeds=model.uncond.embeds, image=image,
        latents=initial_noise(_shape(SIZE), [SEED]), generator=_generators(SIZE, [SEED]),
        num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE[1], width=SIZE[0], output_type="pil",
        callback_on_step_end=keep, **extra, **kw,
    )  # fmt: skip
    return final["latents"], list(out.images)


@pytest.mark.parametrize(
    ("arch", "sampler", "weight", "start"),
    [("sd1", "Euler", 1.0, 0.0), ("sd1", "Euler a", 0.7, 0.5), ("sdxl", "DPM++ 2M", 0.8, 0.0)],
)
def test_one_unit_matches_diffusers_controlnet_pipeline(
    arch: str, sampler: str, weight: float, start: float, cn: SimpleNamespace, models: dict, controlnets: dict
) -> None:
    model, controlnet = models[arch], controlnets[arch]
    unit = active(cn, controlnet, weight=weight, guidance_start=start)
    mine = ours(model, sampler, [cn.residuals.ControlNetHook([unit])])
    ref = theirs(
        model, controlnet, unit.control_map, sampler, controlnet_conditioning_scale=weight,
        control_guidance_start=start, control_guidance_end=1.0,
    )  # fmt: skip
    diff = pixel_diff_one(mine[1], ref[1])
    assert diff <= 1, f"max pixel difference {diff}/255"
    torch.testing.assert_close(mine[0], ref[0], rtol=1e-3, atol=1e-3)
    plain = ours(model, sampler)
    assert pixel_diff_one(mine[1], plain[1]) >= 3, "the unit did not change the image"


def pixel_diff_one(a: list[Image.Image], b: list[Image.Image]) -> int:
    return max(
        int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max())
        for x, y in zip(a, b, strict=True)
    )


def test_zero_weight_is_bit_equal_to_no_unit(cn: SimpleNamespace, models: dict, controlnets: dict) -> None:
    model = models["sd1"]
    plain = ours(model, "Euler")
    zero = ours(model, "Euler", [cn.residuals.ControlNetHook([active(cn, controlnets["sd1"], weight=0.0)])])
    assert torch.equal(zero[0], plain[0])
    outside = active(cn, controlnets["sd1"], guidance_start=0.9, guidance_end=1.0)  # 4 steps: 0.75 < 0.9
    assert torch.equal(ours(model, "Euler", [cn.residuals.ControlNetHook([outside])])[0], plain[0])


def test_start_and_end_are_fractions_of_the_steps(
    cn: SimpleNamespace, models: dict, controlnets: dict
) -> None:
    seen: list[int] = []

    def record(point: HookPoint, state: ModelCallState) -> None:
        if "down_block_additional_residuals" in state.inputs.extra:
            seen.append(state.step)

    unit = active(cn, controlnets["sd1"], guidance_start=0.25, guidance_end=0.5)
    ours(models["sd1"], "Euler", [cn.residuals.ControlNetHook([unit]), record], steps=8)
    assert seen == [2, 3, 4]  # step/8 in [0.25, 0.5], as sd-webui-controlnet decides


def call_state(model: Model, uncond_rows: int = 1) -> ModelCallState:
    """The BEFORE_MODEL state of a guided first step: rows [uncond, cond]."""
    from webui.core.families.unet import UNET_CALL
    from webui.core.sampling.model_inputs import ModelInputs

    text = UNET_CALL.text_inputs([_rows(model.uncond, 0), _rows(model.cond, 0)], None, torch.device("cpu"))
    x = initial_noise(_shape(SIZE), [SEED]).repeat(2, 1, 1, 1)
    return ModelCallState(0, 4, ModelInputs(model.parts.unet, x, torch.tensor(999), text), uncond_rows)


def residuals_of(cn: SimpleNamespace, model: Model, units: Sequence[Any], uncond_rows: int = 1) -> tuple:
    state = call_state(model, uncond_rows)
    cn.residuals.ControlNetHook(units)(HookPoint.BEFORE_MODEL, state)
    extra = state.inputs.extra
    return extra["down_block_additional_residuals"], extra["mid_block_additional_residual"]


def test_two_units_compose(
    cn: SimpleNamespace, models: dict, controlnets: dict, tiny_controlnet_files: dict
) -> None:
    model = models["sd1"]
    other = cn.models.load_controlnet(
        tiny_controlnet_files["sd1", "diffusers"], dict(model.parts.unet.config)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():  # a different ControlNet: the same file's weights, perturbed
            p.add_(0.05 * torch.randn_like(p))
    a = active(cn, controlnets["sd1"], weight=0.6)
    b = active(cn, other, weight=1.3, index=1)
    down_a, mid_a = residuals_of(cn, model, [a])
    down_b, mid_b = residuals_of(cn, model, [b])
    down, mid = residuals_of(cn, model, [a, b])
    assert len(down) == len(down_a) == 6  # conv_in, 2 + 2 layers, one downsampler (tiny SD1)
    for d, x, y in zip(down, down_a, down_b, strict=True):
        assert torch.equal(d, x + y)
    assert torch.equal(mid, mid_a + mid_b)
    one = ours(model, "Euler", [cn.residuals.ControlNetHook([a])])
    both = ours(model, "Euler", [cn.residuals.ControlNetHook([a, b])])
    assert pixel_diff_one(one[1], both[1]) > 5


def test_control_modes(cn: SimpleNamespace, models: dict, controlnets: dict) -> None:
    model, net = models["sd1"], controlnets["sd1"]
    Mode = cn.units.ControlMode
    down_1, mid_1 = residuals_of(cn, model, [active(cn, net, weight=1.0)])
    down_p, mid_p = residuals_of(cn, model, [active(cn, net, weight=0.9, control_mode=Mode.PROMPT)])
    scales = cn.residuals.soft_scales(0.9, len(down_1) + 1)
    assert scales[-1] == pytest.approx(0.9) and scales[0] == pytest.approx(0.9 * 0.825 ** (len(down_1)))
    for d, ref, s in zip(down_p, down_1, scales, strict=False):
        torch.testing.assert_close(d, ref * s)
    torch.testing.assert_close(mid_p, mid_1 * 0.9)
    down_c, mid_c = residuals_of(cn, model, [active(cn, net, weight=0.9, control_mode=Mode.CONTROL)])
    assert all(d[0].abs().max() == 0 for d in down_c) and mid_c[0].abs().max() == 0  # uncond row: none
    for d, ref, s in zip(down_c, down_1, scales, strict=False):
        torch.testing.assert_close(d[1], ref[1] * s, rtol=1e-4, atol=1e-5)
    down_u, _ = residuals_of(cn, model, [active(cn, net, control_mode=Mode.CONTROL)], uncond_rows=0)
    assert down_u[0][0].abs().max() > 0  # unguided (CFG 1): every row is conditional


def test_loop_tells_model_hooks_the_row_layout(models: dict) -> None:
    seen: list[tuple[int, int, int, bool]] = []

    def record(point: HookPoint, state: ModelCallState) -> None:
        seen.append((state.uncond_rows, state.inputs.rows, state.images, state.per_image))

    ours(models["sd1"], "Euler", [record], steps=1)
    ours(models["sd1"], "Euler", [record], cfg=1.0, steps=1)
    run_batch(models["sd1"], [1, 2, 3], [record])
    assert seen[:2] == [(1, 2, 1, True), (0, 1, 1, True)]
    assert set(seen[2:]) == {(3, 6, 3, True)}


def test_prepare_units_loads_and_preprocesses(
    cn: SimpleNamespace, models: dict, tiny_controlnet_files: dict
) -> None:
    models_dir = tiny_controlnet_files["sd1", "ldm"].parents[1]
    listed = cn.models.list_models(models_dir)
    unet_cfg = dict(models["sd1"].parts.unet.config)
    image = Image.new("RGB", (128, 96), "white")
    ImageDraw.Draw(image).rectangle((20, 20, 90, 70), outline="black", width=4)
    [unit] = cn.units.parse_units(
        [{"module": "canny", "model": "tiny-cn-sd1-ldm-bare", "pixel_perfect": True}], models=listed
    )
    unit = replace(unit, image=image)
    [ready] = cn.residuals.prepare_units(
        [unit], width=64, height=64, models=listed, load=lambda p: cn.models.load_controlnet(p, unet_cfg)
    )
    assert ready.image.shape == (1, 3, 64, 64) and min(ready.control_map.size) == 64  # pixel perfect
    assert set(torch.unique(ready.image).tolist()) == {0.0, 1.0}
    xl = replace(unit, model=next(m.title for m in listed if m.name == "tiny-cn-sdxl-ldm"), index=3)
    with pytest.raises(cn.units.UnitError, match="ControlNet for SDXL") as info:
        cn.residuals.prepare_units(
            [xl], width=64, height=64, models=listed, load=lambda p: cn.models.load_controlnet(p, unet_cfg)
        )
    assert (info.value.unit, info.value.name) == (3, "model")
    with pytest.raises(cn.units.UnitError, match="no init image") as info:
        cn.residuals.prepare_units(
            [replace(unit, image=None)], width=64, height=64, models=listed, load=print
        )
    assert info.value.name == "image"
    with pytest.raises(cn.units.UnitError, match="needs ZoeD_M12_N.pt") as info:
        cn.residuals.prepare_units(
            [replace(unit, module="depth_zoe")], width=64, height=64, models=listed, load=print
        )
    assert info.value.name == "module"


def run_batch(model: Model, seeds: Sequence[int], hooks: Sequence[Any]) -> torch.Tensor:
    """run_txt2img on a batch (the engine's per-image UNet calls): final latents."""
    from webui.core.prompts.encode import Conditioning

    def rows(c: Conditioning) -> Conditioning:
        return Conditioning(c.embeds[:1].repeat(len(seeds), 1, 1), None)

    parts = model.parts
    return run_txt2img(
        parts, fresh_scheduler(parts, "Euler a", "Automatic", seeds), initial_noise(_shape(SIZE), seeds),
        _generators(SIZE, seeds), rows(model.cond), rows(model.uncond), steps=STEPS, cfg_scale=CFG,
        width=SIZE[0], height=SIZE[1], model_hooks=list(hooks),
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["Balanced", "ControlNet is more important"])
def test_batch_image_equals_its_single_run_and_nothing_leaks(
    mode: str, cn: SimpleNamespace, models: dict, controlnets: dict
) -> None:
    model = models["sd1"]
    before = run_batch(model, [SEED], [])
    unit = active(cn, controlnets["sd1"], weight=0.8, control_mode=cn.units.ControlMode(mode))
    batch = run_batch(model, [SEED, SEED + 7], [cn.residuals.ControlNetHook([unit])])
    for i, seed in enumerate([SEED, SEED + 7]):
        single = run_batch(model, [seed], [cn.residuals.ControlNetHook([unit])])
        assert torch.equal(batch[i : i + 1], single), f"image {i} of the batch differs from its single run"
    assert not torch.equal(batch[:1], before)
    assert torch.equal(run_batch(model, [SEED], []), before)  # the next job without units: unchanged


def test_shuffle_controlnet_pools_on_cond_rows_as_diffusers(
    cn: SimpleNamespace, models: dict, tiny_controlnet_files: dict, tmp_path: Path
) -> None:
    """A ControlNet named like the shuffle one averages its outputs and acts on the conditional rows only;
    diffusers' pipeline then runs in guess mode, which computes the same."""
    import shutil

    model = models["sd1"]
    path = shutil.copy(tiny_controlnet_files["sd1", "ldm"], tmp_path / "tiny_sd15_shuffle.safetensors")
    net = cn.models.load_controlnet(Path(path), dict(model.parts.unet.config))
    assert net.config.global_pool_conditions
    unit = active(cn, net, weight=0.9)
    down, mid = residuals_of(cn, model, [unit])
    assert mid.shape[-2:] == (1, 1) and mid[0].abs().max() == 0 and mid[1].abs().max() > 0
    mine = ours(model, "Euler", [cn.residuals.ControlNetHook([unit])])
    ref = theirs(model, net, unit.control_map, "Euler", controlnet_conditioning_scale=0.9)
    assert pixel_diff_one(mine[1], ref[1]) <= 1
    torch.testing.assert_close(mine[0], ref[0], rtol=1e-3, atol=1e-3)


def test_engine_run_takes_the_hook(
    cn: SimpleNamespace, tiny_data_dir: Path, tmp_path: Path, controlnets: dict
) -> None:
    """Engine.run(..., model_hooks=[hook]) reaches the loop: a unit changes the image, weight 0 does not."""
    from webui.core.config import AppConfig
    from webui.core.engine import Engine
    from webui.core.models.manager import ModelManager
    from webui.core.types import Txt2ImgRequest

    manager = ModelManager(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path), Precision())
    manager.refresh()
    engine = Engine(manager.config, manager)
    request = Txt2ImgRequest(
        prompt="a red house", checkpoint="tiny-sd1", sampler_name="Euler", seed=SEED, steps=STEPS,
        width=SIZE[0], height=SIZE[1], save_images=False,
    )  # fmt: skip

    def image(units: list[Any]) -> np.ndarray:
        hooks = [cn.residuals.ControlNetHook(units)] if units else []
        return np.asarray(engine.run(request, model_hooks=hooks).images[0].image, dtype=int)

    plain = image([])
    assert np.array_equal(image([active(cn, controlnets["sd1"], weight=0.0)]), plain)
    assert np.abs(image([active(cn, controlnets["sd1"])]) - plain).max() >= 3
