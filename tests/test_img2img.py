"""img2img and inpainting on the tiny SD1 and SD1-inpainting models: strength, noise, masks, paste-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.models.components import Components, Precision
from webui.core.models.loader import load_model
from webui.core.prompts.encode import Conditioning, encode_prompts
from webui.core.sampling.loop import HookPoint, Progress, StepState
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import make_scheduler
from webui.core.tasks import img2img
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.inpaint import PreparedImage, finish_image, prepare_init
from webui.core.tasks.txt2img import run_txt2img

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have:UserWarning"),
]

SIZE = 64
SEEDS = [7]
SHAPE = (4, SIZE // 8, SIZE // 8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


@pytest.fixture(scope="module")
def sd1(tiny_files: dict[str, Path]) -> Components:
    return load_model(tiny_files["sd1"], Precision())


@pytest.fixture(scope="module")
def sd1_inpaint(tiny_files: dict[str, Path]) -> Components:
    return load_model(tiny_files["sd1-inpaint"], Precision())


def _conds(parts: Components) -> tuple[Conditioning, Conditioning]:
    return encode_prompts(parts, ["a red apple"]), encode_prompts(parts, ["blurry"])


def _picture(seed: int = 0) -> Image.Image:
    """A smooth picture with some structure (noise would be all high frequencies)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rng = np.random.default_rng(seed)
    arr = np.stack([np.sin(6 * x + rng.random()), np.cos(5 * y), x * y], axis=-1) * 110 + 128
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _noise() -> torch.Tensor:
    return initial_noise(SHAPE, SEEDS, SEEDS, 0.0, (-1, -1))


def _run(
    parts: Components,
    init: torch.Tensor,
    *,
    sampler: str = "Euler",
    steps: int = 6,
    strength: float = 0.6,
    **kw: object,
) -> torch.Tensor:
    cond, uncond = _conds(parts)
    sched = make_scheduler(sampler, None, parts.scheduler_config, noise_seeds=SEEDS)
    gens = NoiseSource.for_seeds(SHAPE, SEEDS).generator_list()
    return img2img.run_img2img(
        parts, sched, init, _noise(), gens, cond, uncond,
        steps=steps, strength=strength, cfg_scale=7.0, width=SIZE, height=SIZE, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


# -- strength -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "strength", "first"),
    [(20, 0.75, 5), (20, 1.0, 0), (20, 0.0, 20), (10, 0.3, 7), (10, 0.99, 1), (1, 0.5, 1), (1, 1.0, 0)],
)
def test_start_step(steps: int, strength: float, first: int) -> None:
    assert img2img.start_step(steps, strength) == first


@pytest.mark.parametrize(("steps", "strength"), [(0, 0.5), (10, -0.1), (10, 1.5)])
def test_start_step_rejects(steps: int, strength: float) -> None:
    with pytest.raises(ValueError):
        img2img.start_step(steps, strength)


@pytest.mark.parametrize(("strength", "expected"), [(0.5, 3), (0.34, 2), (1.0, 6), (0.1, 0)])
def test_the_number_of_steps_run(sd1: Components, strength: float, expected: int) -> None:
    seen: list[Progress] = []
    _run(sd1, img2img.encode_init(sd1, [_picture()]), strength=strength, on_progress=seen.append)
    assert len(seen) == expected
    assert all(p.total == expected for p in seen)


def test_strength_zero_returns_the_vae_round_trip(sd1: Components) -> None:
    img = _picture()
    init = img2img.encode_init(sd1, [img])
    out = _run(sd1, init, strength=0.0)
    assert torch.equal(out, init)
    round_trip = to_pil(decode(sd1.vae, init))[0]
    assert np.array_equal(np.asarray(to_pil(decode(sd1.vae, out))[0]), np.asarray(round_trip))


def test_small_strength_stays_close_to_the_init(sd1: Components) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    one_step = _run(sd1, init, steps=20, strength=0.05)  # the last, least noisy step only
    half = _run(sd1, init, steps=20, strength=0.5)
    near, far = (one_step - init).abs().mean().item(), (half - init).abs().mean().item()
    assert near < far / 3, (near, far)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "Heun"])
def test_strength_one_ignores_the_init_and_equals_txt2img(sd1: Components, sampler: str) -> None:
    a = _run(sd1, img2img.encode_init(sd1, [_picture(1)]), sampler=sampler, steps=4, strength=1.0)
    b = _run(sd1, img2img.encode_init(sd1, [_picture(2)]), sampler=sampler, steps=4, strength=1.0)
    cond, uncond = _conds(sd1)
    sched = make_scheduler(sampler, None, sd1.scheduler_config, noise_seeds=SEEDS)
    gens = NoiseSource.for_seeds(SHAPE, SEEDS).generator_list()
    t2i = run_txt2img(
        sd1, sched, _noise(), gens, cond, uncond, steps=4, cfg_scale=7.0, width=SIZE, height=SIZE
    )
    assert torch.equal(a, t2i) and torch.equal(b, t2i)


def _first_latents(
    parts: Components, init: torch.Tensor, sampler: str, **kw: object
) -> tuple[torch.Tensor, object]:
    seen: list[torch.Tensor] = []

    def grab(point: HookPoint, state: StepState) -> None:
        if point is HookPoint.BEFORE_STEP and state.step == 0:
            seen.append(state.latents.clone())

    cond, uncond = _conds(parts)
    sched = make_scheduler(sampler, None, parts.scheduler_config, noise_seeds=SEEDS)
    gens = NoiseSource.for_seeds(SHAPE, SEEDS).generator_list()
    img2img.run_img2img(
        parts, sched, init, _noise(), gens, cond, uncond,
        steps=10, strength=0.5, cfg_scale=7.0, width=SIZE, height=SIZE, hooks=[grab], **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return seen[0], sched


def test_init_is_noised_to_the_first_step_sigma(sd1: Components) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    first, sched = _first_latents(sd1, init, "Euler")
    sigma = sched.sigmas[5]  # type: ignore[attr-defined]
    assert torch.allclose(first, init + _noise() * sigma, atol=1e-5)
    doubled, sched = _first_latents(sd1, init, "Euler", initial_noise_multiplier=0.5)
    assert torch.allclose(doubled, init + 0.5 * _noise() * sigma, atol=1e-5)


def test_init_is_noised_to_the_first_timestep_for_ddpm_style_schedulers(sd1: Components) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    first, sched = _first_latents(sd1, init, "DDIM")
    t = int(sched.timesteps[5])  # type: ignore[attr-defined]
    a = sched.alphas_cumprod[t]  # type: ignore[attr-defined]
    assert torch.allclose(first, a.sqrt() * init + (1 - a).sqrt() * _noise(), atol=1e-5)


def test_encode_init_is_batch_independent(sd1: Components) -> None:
    a, b = _picture(1), _picture(2)
    both = img2img.encode_init(sd1, [a, b])
    assert both.shape == (2, *SHAPE)
    assert torch.equal(both[1:], img2img.encode_init(sd1, [b]))


# -- masks in latent space ------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DDIM", "Heun", "Euler a"])
def test_a_mask_that_keeps_everything_returns_the_init(sd1: Components, sampler: str) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    out = _run(sd1, init, sampler=sampler, mask_latent=torch.zeros(1, 1, 8, 8))
    assert torch.equal(out, init)


def test_a_mask_that_repaints_everything_is_plain_img2img(sd1: Components) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    assert torch.equal(_run(sd1, init, mask_latent=torch.ones(1, 1, 8, 8)), _run(sd1, init))


def test_blending_keeps_the_known_half_of_the_latents(sd1: Components) -> None:
    init = img2img.encode_init(sd1, [_picture()])
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    out = _run(sd1, init, strength=1.0, mask_latent=mask)
    assert torch.equal(out[..., :4], init[..., :4])
    assert not torch.allclose(out[..., 4:], init[..., 4:], atol=1e-2)


def test_latent_fill_modes() -> None:
    init = torch.full((1, 4, 2, 2), 3.0)
    noise = torch.full((1, 4, 2, 2), -1.0)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert img2img.fill_latents(init, noise, mask, img2img.LATENT_NOTHING)[0, 0].tolist() == [[0, 3], [3, 3]]
    assert img2img.fill_latents(init, noise, mask, img2img.LATENT_NOISE)[0, 0].tolist() == [[-1, 3], [3, 3]]
    assert torch.equal(img2img.fill_latents(init, noise, mask, img2img.ORIGINAL), init)
    with pytest.raises(ValueError):
        img2img.fill_latents(init, noise, mask, 7)


def test_latent_mask_is_downsampled_and_rounded() -> None:
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (32, 0, 64, 64))
    lm = img2img.latent_mask(m, 8, 8)
    assert lm.shape == (1, 1, 8, 8)
    assert lm[0, 0, :, :4].sum() == 0 and (lm[0, 0, :, 4:] == 1).all()
    soft = Image.new("L", (64, 64), 100)
    assert img2img.latent_mask(soft, 8, 8, round=False)[0, 0, 0, 0].item() == pytest.approx(100 / 255)


def test_inpaint_image_cond(sd1_inpaint: Components) -> None:
    img = _picture()
    m = Image.new("L", (SIZE, SIZE), 0)
    m.paste(255, (0, 0, 32, 64))
    cond = img2img.inpaint_image_cond(sd1_inpaint, img2img.to_tensor([img]), m)
    assert cond.shape == (1, 5, 8, 8)
    assert (cond[0, 0, :, :4] == 1).all() and (cond[0, 0, :, 4:] == 0).all()
    masked = img2img.to_tensor([img]).clone()
    masked[..., :32] = 0.0  # mid-grey where the mask is
    assert torch.allclose(cond[:, 1:], img2img.encode_init(sd1_inpaint, masked), atol=1e-6)


def test_refiner_time_ids_have_one_row_per_unet_row() -> None:
    parts = Components("sdxl-refiner", "SDXL refiner", "x", None, None, None, object(), None, None)
    ids = img2img.time_ids(parts, 96, 64, batch=2, guided=True)
    assert ids is not None and ids.tolist() == [[64, 96, 0, 0, 2.5]] * 2 + [[64, 96, 0, 0, 6.0]] * 2
    ids = img2img.time_ids(parts, 96, 64, batch=2, guided=False)
    assert ids is not None and ids.tolist() == [[64, 96, 0, 0, 6.0]] * 2


# -- inpainting end to end ------------------------------------------------------------------------------


def _inpaint(parts: Components, prep: PreparedImage, *, strength: float = 0.8, fill: int = 1) -> Image.Image:
    assert prep.mask is not None
    work = img2img.to_tensor([prep.image])
    init = img2img.encode_init(parts, work)
    mask = img2img.latent_mask(prep.mask, SIZE // 8, SIZE // 8)
    cond_img = None
    if parts.unet.config.in_channels == 9:
        cond_img = img2img.inpaint_image_cond(parts, img2img.to_tensor([prep.cond_image]), prep.mask)
    out = _run(parts, init, strength=strength, mask_latent=mask, image_cond=cond_img, inpainting_fill=fill)
    return finish_image(prep, to_pil(decode(parts.vae, out))[0])


def _square_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


@pytest.mark.parametrize("arch", ["sd1", "sd1-inpaint"])
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_pixels_outside_the_unblurred_mask_are_byte_identical(
    request: pytest.FixtureRequest, arch: str, fill: int
) -> None:
    parts: Components = request.getfixturevalue("sd1" if arch == "sd1" else "sd1_inpaint")
    img = _picture(3)
    mask = _square_mask((16, 16, 40, 48))
    prep = prepare_init(
        img, mask, width=SIZE, height=SIZE, mask_blur_x=4, mask_blur_y=4, inpainting_fill=fill
    )
    out = np.asarray(_inpaint(parts, prep, fill=fill))
    outside = np.asarray(mask) == 0
    assert out.shape == (SIZE, SIZE, 3)
    assert np.array_equal(out[outside], np.asarray(img)[outside])
    assert not np.array_equal(out[~outside], np.asarray(img)[~outside]), "nothing was repainted"


def test_inverted_mask_repaints_the_outside(sd1: Components) -> None:
    img = _picture(4)
    mask = _square_mask((16, 16, 48, 48))
    prep = prepare_init(img, mask, width=SIZE, height=SIZE, invert=True)
    out = np.asarray(_inpaint(sd1, prep))
    inside = np.asarray(mask) == 255
    assert np.array_equal(out[inside], np.asarray(img)[inside])
    assert not np.array_equal(out[~inside], np.asarray(img)[~inside])


@pytest.mark.parametrize("arch", ["sd1", "sd1-inpaint"])
def test_only_masked_touches_nothing_outside_the_padded_box(
    request: pytest.FixtureRequest, arch: str
) -> None:
    parts: Components = request.getfixturevalue("sd1" if arch == "sd1" else "sd1_inpaint")
    big = _picture(5).resize((160, 128))
    mask = _square_mask((70, 50, 90, 66), (160, 128))
    prep = prepare_init(
        big, mask, width=SIZE, height=SIZE, inpaint_full_res=True, inpaint_full_res_padding=8, mask_blur_x=2,
        mask_blur_y=2,
    )  # fmt: skip
    assert prep.box is not None and prep.image.size == (SIZE, SIZE) and prep.original.size == (160, 128)
    x1, y1, x2, y2 = prep.box
    assert x1 <= 70 - 8 and y1 <= 50 - 8 and x2 >= 90 + 8 and y2 >= 66 + 8  # blur and padding included
    assert x2 - x1 == y2 - y1  # grown to the 1:1 processing ratio
    out = np.asarray(_inpaint(parts, prep))
    assert out.shape == (128, 160, 3)
    outside_box = np.ones((128, 160), dtype=bool)
    outside_box[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside_box], np.asarray(big)[outside_box])
    assert not np.array_equal(out[50:66, 70:90], np.asarray(big)[50:66, 70:90])


def test_only_masked_with_an_empty_mask_falls_back_to_the_whole_picture() -> None:
    img = _picture()
    prep = prepare_init(img, Image.new("L", (SIZE, SIZE)), width=SIZE, height=SIZE, inpaint_full_res=True)
    assert prep.box is None and prep.original.size == (SIZE, SIZE)
    generated = Image.new("RGB", (SIZE, SIZE), (0, 255, 0))
    assert np.array_equal(np.asarray(finish_image(prep, generated)), np.asarray(img))


def test_prepare_without_a_mask_resizes_by_the_mode() -> None:
    img = _picture().resize((96, 64))
    crop = prepare_init(img, None, width=SIZE, height=SIZE, resize_mode=1)
    assert crop.image.size == (SIZE, SIZE) and crop.mask is None
    latent = prepare_init(img, None, width=SIZE, height=SIZE, resize_mode=3)
    assert latent.image.size == (96, 64) and latent.original.size == (SIZE, SIZE)
    generated = Image.new("RGB", (SIZE, SIZE))
    assert finish_image(crop, generated) is generated


def test_latent_upscale_mode_with_a_mask(sd1: Components) -> None:
    img = _picture(6).resize((96, 96))
    mask = _square_mask((24, 24, 72, 72), (96, 96))
    prep = prepare_init(img, mask, width=SIZE, height=SIZE, resize_mode=3)
    assert prep.image.size == (96, 96) and prep.mask is not None and prep.mask.size == (SIZE, SIZE)
    assert prep.cond_image.size == (SIZE, SIZE)
    from webui.core.tasks.resize import resize_latents

    init = resize_latents(img2img.encode_init(sd1, [prep.image]), SIZE, SIZE)
    assert init.shape == (1, *SHAPE)
    out = _run(sd1, init, mask_latent=img2img.latent_mask(prep.mask, 8, 8))
    result = np.asarray(finish_image(prep, to_pil(decode(sd1.vae, out))[0]))
    assert prep.hard_mask is not None
    keep = np.asarray(prep.hard_mask) == 0
    assert np.array_equal(result[keep], np.asarray(prep.original)[keep])
