"""Soft inpainting and differential diffusion through `Engine.run` on the tiny models, and their parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.tasks import masks, soft_inpaint
from webui.core.types import Img2ImgRequest, RequestError
from webui.ui.params import from_infotext

BASE: dict[str, Any] = dict(
    prompt="a red apple", negative_prompt="blurry", steps=4, seed=5, width=64, height=64, save_images=False
)
SOFT = dict(soft_inpainting=True)


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    out = tmp_path_factory.mktemp("soft-outputs")
    return Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=out), m)


def _picture() -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(0)
    base = np.stack([x * 4, y * 4, (x + y) * 2], -1) + rng.integers(0, 30, (64, 64, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _mask(box: tuple[int, int, int, int] = (13, 18, 45, 41)) -> Image.Image:
    m = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(m).rectangle(box, fill=255)  # not on the 8-pixel latent grid
    return m


def _run(engine: Engine, **kw: Any) -> np.ndarray:
    r = engine.run(Img2ImgRequest(**{**BASE, "init_images": (_picture(),), **kw}))
    return np.asarray(r.images[0].image)


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1-inpaint"])
def test_soft_inpainting_with_a_hard_mask_is_ordinary_inpainting_bit_for_bit(
    engine: Engine, checkpoint: str
) -> None:
    common = dict(mask=_mask(), mask_blur=0, denoising_strength=0.8, checkpoint=checkpoint)
    ordinary = _run(engine, **common)
    soft = _run(engine, **common, **SOFT, mask_blend_scale=1.5, composite_difference_threshold=4.0)
    assert np.array_equal(soft, ordinary)
    assert not np.array_equal(ordinary, np.asarray(_picture()))  # it did repaint


def test_a_soft_mask_changes_the_transition_band_and_keeps_every_pixel_where_it_is_zero(
    engine: Engine,
) -> None:
    big = _mask((7, 9, 55, 53))
    common = dict(mask=big, mask_blur=4, denoising_strength=0.8)
    ordinary = _run(engine, **common)
    soft = _run(engine, **common, **SOFT)
    blurred = np.asarray(masks.blur_mask(big, 4, 4))
    zero, band, full = blurred == 0, (blurred > 0) & (blurred < 255), blurred == 255
    assert zero.any() and band.any() and full.any()
    assert np.array_equal(soft[zero], np.asarray(_picture())[zero])
    diff = np.abs(soft.astype(int) - ordinary.astype(int)).max(-1)
    assert (diff[band] > 2).mean() > 0.2  # the band is blended differently
    # where the mask is 255 the latents still differ (a soft latent mask near the band), not the rule
    assert not np.array_equal(soft, ordinary)


def test_soft_inpainting_writes_a1111s_keys_and_png_info_reads_them_back(engine: Engine) -> None:
    settings = dict(
        mask_blend_power=1.5,
        mask_blend_scale=0.75,
        inpaint_detail_preservation=6.0,
        composite_mask_influence=0.25,
        composite_difference_threshold=1.0,
        composite_difference_contrast=3.5,
    )
    r = engine.run(Img2ImgRequest(**{**BASE, "init_images": (_picture(),)}, mask=_mask(), **SOFT, **settings))
    text = r.images[0].infotext
    assert "Soft inpainting enabled: True" in text
    keys = parse_infotext(text)
    assert keys["Soft inpainting schedule bias"] == "1.5"
    assert keys["Soft inpainting difference contrast"] == "3.5"
    fields = from_infotext(text)
    assert fields["soft_inpainting"] is True and fields["differential_diffusion"] is False
    assert {k: fields[k] for k in settings} == settings
    plain = engine.run(Img2ImgRequest(**{**BASE, "init_images": (_picture(),)}, mask=_mask()))
    assert "Soft inpainting" not in plain.images[0].infotext
    assert from_infotext(plain.images[0].infotext)["soft_inpainting"] is False


def test_differential_diffusion_all_ones_is_plain_img2img_and_all_zeros_is_the_init(engine: Engine) -> None:
    plain = _run(engine, denoising_strength=0.7)
    ones = _run(
        engine, denoising_strength=0.7, mask=Image.new("L", (64, 64), 255), differential_diffusion=True
    )
    assert np.array_equal(ones, plain)
    zeros = _run(
        engine, denoising_strength=0.7, mask=Image.new("L", (64, 64), 0), differential_diffusion=True
    )
    assert np.array_equal(zeros, np.asarray(_picture()))


def test_differential_diffusion_changes_the_latents_more_where_the_map_is_higher(
    tiny_files: dict[str, Path],
) -> None:
    # in latent space: the tiny VAE has random weights, so pictures would not show it
    from webui.core.models.loader import load_model
    from webui.core.prompts.encode import encode_prompts
    from webui.core.sampling.noise import NoiseSource, initial_noise
    from webui.core.sampling.samplers import make_scheduler
    from webui.core.tasks import img2img

    parts = load_model(tiny_files["sd1"], Precision())
    init = img2img.encode_init(parts, [_picture()])
    shape, seeds = tuple(init.shape[1:]), [3]
    gens = NoiseSource.for_seeds(shape, seeds).generator_list()
    ramp = torch.linspace(0.05, 0.95, shape[2]).expand(1, 1, shape[1], shape[2])
    out = img2img.run_img2img(
        parts, make_scheduler("Euler", None, parts.scheduler_config, noise_seeds=seeds), init,
        initial_noise(shape, seeds, seeds, 0.0, (-1, -1)), gens,
        encode_prompts(parts, ["a red apple"]), encode_prompts(parts, ["blurry"]), steps=10, strength=1.0,
        cfg_scale=7.0, width=64, height=64, mask_latent=ramp, blend=soft_inpaint.DifferentialDiffusion(),
    )  # fmt: skip
    change = (out - init).abs().mean(dim=(0, 1, 2))
    assert change[0] < change[3] < change[7] and change[0] < change[7] / 3


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(mask_blend_power=9.0), "mask_blend_power"),
        (dict(inpaint_detail_preservation=0.5), "inpaint_detail_preservation"),
        (dict(composite_mask_influence=float("nan")), "composite_mask_influence"),
        (dict(soft_inpainting="yes"), "soft_inpainting"),
        (dict(soft_inpainting=True, differential_diffusion=True), "differential_diffusion"),
    ],
)
def test_bad_settings_are_request_errors_naming_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as e:
        Img2ImgRequest(**BASE, init_images=(_picture(),), mask=_mask(), **kw).validate()
    assert e.value.field == field


def test_soft_inpainting_without_a_mask_is_refused() -> None:
    with pytest.raises(RequestError) as e:
        Img2ImgRequest(**BASE, init_images=(_picture(),), soft_inpainting=True).validate()
    assert e.value.field == "soft_inpainting"


def test_the_schedule_mask_preserves_more_at_high_noise_and_is_binary_on_a_binary_mask() -> None:
    rule = soft_inpaint.SoftInpainting()
    m = torch.tensor([0.0, 0.5, 1.0])
    high, low = soft_inpaint.schedule_mask(m, 14.6, rule), soft_inpaint.schedule_mask(m, 0.03, rule)
    assert high[1] < 0.01 < 0.95 < low[1]
    assert torch.equal(high[[0, 2]], m[[0, 2]]) and torch.equal(low[[0, 2]], m[[0, 2]])
    zero = soft_inpaint.schedule_mask(m, 1.0, soft_inpaint.SoftInpainting(mask_blend_scale=0.0))
    assert zero[0] == 0  # a keep pixel stays kept even when the exponent is 0


def test_the_magnitude_blend_keeps_the_larger_norm_and_is_exact_at_the_ends() -> None:
    a = torch.tensor([[1.0, 0.0]]).reshape(1, 2, 1, 1)
    b = torch.tensor([[0.0, 1.0]]).reshape(1, 2, 1, 1)
    half = soft_inpaint.magnitude_blend(a, b, torch.full((1, 1, 1, 1), 0.5), 4.0)
    assert torch.linalg.vector_norm(half) == pytest.approx(1.0, abs=1e-4)  # a lerp would give 0.707
    assert torch.equal(soft_inpaint.magnitude_blend(a, b, torch.zeros(1, 1, 1, 1), 4.0), a)
    assert torch.equal(soft_inpaint.magnitude_blend(a, b, torch.ones(1, 1, 1, 1), 4.0), b)


def test_the_percentile_filter_matches_a_direct_weighted_stack() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((6, 7))
    kernel = soft_inpaint.gaussian_weights()
    got = soft_inpaint.percentile_filter(img, kernel, 0.25, 0.75)
    y, x = 0, 3  # a window cut by the top edge
    vals, wts = [], []
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if 0 <= y + dy < 6 and 0 <= x + dx < 7:
                vals.append(img[y + dy, x + dx])
                wts.append(kernel[dy + 2, dx + 2])
    order = np.argsort(vals)
    v, w = np.array(vals)[order], np.array(wts)[order]
    top = np.cumsum(w)
    lo, hi = top[-1] * 0.25, top[-1] * 0.75
    overlap = np.clip(np.minimum(hi, top) - np.maximum(lo, top - w), 0, None)
    assert got[y, x] == pytest.approx(float((v * overlap).sum() / overlap.sum()))
    assert not np.allclose(got, img)


def test_differential_diffusion_frees_a_pixel_for_the_last_ceil_m_n_steps() -> None:
    m = torch.tensor([0.0, 0.05, 0.5, 1.0])
    free = torch.stack([soft_inpaint.free_steps(m, k, 10) for k in range(10)])
    assert free.sum(0).tolist() == [0, 1, 5, 10]
    assert free[-1].tolist() == [False, True, True, True]


def test_the_flow_blend_follows_the_same_rules() -> None:
    from webui.core.sampling.loop import HookPoint, StepState
    from webui.core.tasks.flow_img2img import FlowMaskBlend

    g = torch.Generator().manual_seed(0)
    init, noise, latents = (torch.randn(1, 4, 6, 6, generator=g) for _ in range(3))
    sigmas = torch.linspace(1.0, 0.0, 5)
    binary = (torch.rand(1, 1, 6, 6, generator=g) > 0.5).float()

    def after(rule: soft_inpaint.BlendRule, mask: torch.Tensor, step: int) -> torch.Tensor:
        state = StepState(step, 4, torch.tensor(0.0), latents.clone())
        FlowMaskBlend(sigmas, 0, init, noise, mask, rule)(HookPoint.AFTER_STEP, state)
        return state.latents

    for step in (0, 3):
        assert torch.equal(after(soft_inpaint.SoftInpainting(), binary, step), after(None, binary, step))
    half = torch.full((1, 1, 6, 6), 0.5)
    early, late = after(soft_inpaint.SoftInpainting(), half, 0), after(soft_inpaint.SoftInpainting(), half, 2)
    # at sigma 1 (step 0) the partly masked pixels are all original; later the result takes over
    assert torch.allclose(early, 0.75 * noise + 0.25 * init) and not torch.allclose(late, early)
    dd = soft_inpaint.DifferentialDiffusion()
    assert torch.equal(after(dd, torch.zeros(1, 1, 6, 6), 3), init)  # never free: the clean init
    assert torch.equal(after(dd, torch.ones(1, 1, 6, 6), 0), latents)


def test_the_step_noise_level_is_the_k_diffusion_sigma() -> None:
    from diffusers import DDIMScheduler

    sd = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert soft_inpaint.diffusion_sigma(sd, torch.tensor(999)) == pytest.approx(14.6146, abs=1e-3)
    assert soft_inpaint.diffusion_sigma(sd, torch.tensor(0)) == pytest.approx(0.0292, abs=1e-3)
    assert soft_inpaint.flow_sigma(0.5) == 1.0 and soft_inpaint.flow_sigma(1.0) == float("inf")
