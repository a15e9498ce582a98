"""Seeds and initial noise: A1111's semantics, the same on every device and at every batch position."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from webui.core.sampling.noise import (
    MAX_SEED,
    NoiseSource,
    batch_seeds,
    image_noise,
    initial_noise,
    paste_centered,
    resolve_seed,
    slerp,
    validate_seed,
)

SHAPE = (4, 16, 16)  # a 128x128 image


def _randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# -- seeds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-2, MAX_SEED + 1, 2**40])
def test_seed_range_is_checked_and_named(bad: int) -> None:
    with pytest.raises(ValueError, match="^seed must be between -1 and 4294967295"):
        validate_seed(bad)
    with pytest.raises(ValueError, match="^subseed must be between -1 and 4294967295"):
        resolve_seed(bad, field="subseed")


@pytest.mark.parametrize("bad", [True, 1.5, "7"])
def test_seed_must_be_an_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="^seed must be an integer"):
        validate_seed(bad)  # type: ignore[arg-type]


def test_resolve_seed() -> None:
    assert resolve_seed(0) == 0
    assert resolve_seed(MAX_SEED) == MAX_SEED
    a = resolve_seed(-1, random.Random(1))
    assert a == resolve_seed(-1, random.Random(1))
    assert 0 <= a <= MAX_SEED
    assert len({resolve_seed(-1) for _ in range(8)}) > 1


def test_batch_seeds_continue_across_batches() -> None:
    assert batch_seeds(100, 7, batch_size=2, n_iter=3) == [(100 + i, 7 + i) for i in range(6)]


def test_batch_seeds_with_a_variation_keep_the_seed() -> None:
    """A1111: with subseed_strength != 0 every image keeps the seed and only the subseed advances."""
    assert batch_seeds(100, 7, 2, 2, subseed_strength=0.3) == [(100, 7), (100, 8), (100, 9), (100, 10)]


def test_batch_seeds_validation() -> None:
    with pytest.raises(ValueError, match="seed must be resolved"):
        batch_seeds(-1, 0, 1, 1)
    with pytest.raises(ValueError, match="subseed must be between"):
        batch_seeds(0, MAX_SEED + 1, 1, 1)
    with pytest.raises(ValueError, match="at least 1"):
        batch_seeds(0, 0, 0, 1)
    assert batch_seeds(MAX_SEED, 0, 2, 1)[1] == (MAX_SEED + 1, 1)  # like A1111, no wrap-around


# -- initial noise -------------------------------------------------------------------------------------


def test_noise_is_the_seed_s_first_cpu_draw() -> None:
    out = initial_noise(SHAPE, [42])
    assert out.shape == (1, *SHAPE) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out[0], _randn(42, SHAPE))
    assert torch.equal(out, initial_noise(SHAPE, [42]))
    assert not torch.equal(out, initial_noise(SHAPE, [43]))


def test_batch_position_does_not_change_an_image() -> None:
    seeds = [1000, 1001, 1002, 1003]
    batch = initial_noise(SHAPE, seeds, seeds, 0.25, (64, 96))
    for i, s in enumerate(seeds):
        assert torch.equal(batch[i], initial_noise(SHAPE, [s], [s], 0.25, (64, 96))[0])


def test_same_as_diffusers_with_a_generator_per_image() -> None:
    """diffusers' pipelines given generator=[one per image] draw exactly this noise."""
    seeds = [5, 6, 7]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    torch.testing.assert_close(
        initial_noise(SHAPE, seeds), randn_tensor((3, *SHAPE), generator=generators), rtol=0, atol=0
    )


def test_device_and_dtype_keep_the_cpu_values() -> None:
    cpu = initial_noise(SHAPE, [9, 10])
    half = initial_noise(SHAPE, [9, 10], dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, cpu.half())
    meta = initial_noise(SHAPE, [9, 10], device="meta", dtype=torch.bfloat16)
    assert meta.device.type == "meta" and meta.dtype == torch.bfloat16 and meta.shape == cpu.shape
    if torch.cuda.is_available():
        assert torch.equal(initial_noise(SHAPE, [9, 10], device="cuda").cpu(), cpu)


# -- variation seed ------------------------------------------------------------------------------------


def test_variation_endpoints() -> None:
    seed_only = initial_noise(SHAPE, [1])
    assert torch.equal(initial_noise(SHAPE, [1], [2], 0.0), seed_only)
    torch.testing.assert_close(
        initial_noise(SHAPE, [1], [2], 1.0), initial_noise(SHAPE, [2]), rtol=0, atol=1e-6
    )
    middle = initial_noise(SHAPE, [1], [2], 0.5)
    assert not torch.allclose(middle, seed_only)
    assert not torch.allclose(middle, initial_noise(SHAPE, [2]))


def test_slerp_keeps_unit_vectors_on_the_sphere() -> None:
    """A1111 normalises along dim 1 of (C, H, W): each (channel, column) is a vector."""
    low, high = _randn(1, SHAPE), _randn(2, SHAPE)
    low_u = low / low.norm(dim=1, keepdim=True)
    high_u = high / high.norm(dim=1, keepdim=True)
    for val in (0.1, 0.5, 0.9):
        norms = slerp(val, low_u, high_u).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-4)


def test_slerp_keeps_the_noise_unit_variance() -> None:
    """The point of slerp over lerp: a halfway noise is still N(0, 1), not shrunk to std 0.71."""
    big = (4, 64, 64)
    low, high = _randn(1, big), _randn(2, big)
    assert slerp(0.5, low, high).std().item() == pytest.approx(1.0, abs=0.03)
    assert (0.5 * low + 0.5 * high).std().item() == pytest.approx(0.707, abs=0.03)


def test_slerp_of_parallel_noises_falls_back_to_lerp() -> None:
    x = _randn(3, SHAPE)
    out = slerp(0.3, x, x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, x)
    # the same seed as subseed (A1111 users do this) is exactly the seed's noise
    torch.testing.assert_close(initial_noise(SHAPE, [3], [3], 0.7), initial_noise(SHAPE, [3]))


def test_variation_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="one subseed per seed"):
        initial_noise(SHAPE, [1, 2], [3], 0.5)
    with pytest.raises(ValueError, match="one subseed per seed"):
        initial_noise(SHAPE, [1], None, 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        initial_noise(SHAPE, [1], [2], 1.5)
    with pytest.raises(ValueError, match="at least one"):
        initial_noise(SHAPE, [])
    with pytest.raises(ValueError, match="positive sizes"):
        initial_noise((4, 0, 8), [1])


# -- resize seed from ----------------------------------------------------------------------------------


def test_resize_from_the_same_size_is_no_resize() -> None:
    plain = initial_noise(SHAPE, [5], [6], 0.4)
    assert torch.equal(initial_noise(SHAPE, [5], [6], 0.4, (128, 128)), plain)
    assert torch.equal(initial_noise(SHAPE, [5], [6], 0.4, (0, 0)), plain)  # A1111's UI "off"
    assert torch.equal(initial_noise(SHAPE, [5], [6], 0.4, (-1, -1)), plain)  # A1111's API "off"


def test_resize_from_a_smaller_size_pastes_it_centred() -> None:
    out = initial_noise(SHAPE, [5], seed_resize_from=(64, 32))[0]  # (w, h): old latent 4 rows x 8 columns
    old = _randn(5, (4, 4, 8))  # (C, 32 // 8, 64 // 8)
    canvas = _randn(5, SHAPE)
    dy, dx = (16 - 4) // 2, (16 - 8) // 2
    assert torch.equal(out[:, dy : dy + 4, dx : dx + 8], old)
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[:, dy : dy + 4, dx : dx + 8] = False
    assert torch.equal(out[mask], canvas[mask])


def test_resize_from_a_larger_size_crops_its_centre() -> None:
    out = initial_noise(SHAPE, [5], seed_resize_from=(192, 160))[0]  # old latent 20 (h) x 24 (w)
    old = _randn(5, (4, 20, 24))
    assert torch.equal(out, old[:, 2:18, 4:20])


def test_resize_window_when_the_difference_is_odd() -> None:
    """A1111's offsets floor-divide; a larger old size by an odd amount leaves the last row/column."""
    out = initial_noise((4, 8, 8), [5], seed_resize_from=(88, 88))[0]  # old latent 11 x 11
    old, canvas = _randn(5, (4, 11, 11)), _randn(5, (4, 8, 8))
    assert torch.equal(out[:, :7, :7], old[:, 2:9, 2:9])
    assert torch.equal(out[:, 7, :], canvas[:, 7, :]) and torch.equal(out[:, :, 7], canvas[:, :, 7])
    smaller = initial_noise((4, 8, 8), [5], seed_resize_from=(40, 40))[0]  # old 5 x 5 at offset 1
    assert torch.equal(smaller[:, 1:6, 1:6], _randn(5, (4, 5, 5)))


def test_resize_with_a_variation_mixes_at_the_old_size() -> None:
    out = image_noise(SHAPE, 5, 6, 0.5, (64, 64))
    mixed = slerp(0.5, _randn(5, (4, 8, 8)), _randn(6, (4, 8, 8)))
    assert torch.equal(out[:, 4:12, 4:12], mixed)


def test_paste_centered_mixed_axes() -> None:
    src = torch.arange(2 * 4 * 10, dtype=torch.float32).reshape(2, 4, 10)  # shorter and wider
    out = paste_centered(src, torch.zeros(2, 8, 6))
    assert torch.equal(out[:, 2:6, :], src[:, :, 2:8])
    assert (out[:, :2] == 0).all() and (out[:, 6:] == 0).all()


def test_resize_from_must_be_a_latent_size() -> None:
    with pytest.raises(ValueError, match="at least 8x8"):
        initial_noise(SHAPE, [1], seed_resize_from=(4, 64))


# -- per-step noise ------------------------------------------------------------------------------------


def test_step_noise_continues_the_image_s_generator() -> None:
    """A1111 (CPU source): step noise is the next draw of the generator that made the initial noise."""
    source = NoiseSource.for_seeds(SHAPE, [3, 4])
    g = torch.Generator().manual_seed(4)
    first = torch.randn(SHAPE, generator=g)
    assert torch.equal(first, initial_noise(SHAPE, [4])[0])
    second = torch.randn(SHAPE, generator=g)
    third = torch.randn(SHAPE, generator=g)
    assert torch.equal(source.next()[1], second)
    assert torch.equal(source.next()[1], third)


def test_step_noise_does_not_depend_on_batch_position() -> None:
    batch = NoiseSource.for_seeds(SHAPE, [10, 11, 12])
    single = NoiseSource.for_seeds(SHAPE, [11])
    for _ in range(3):
        assert torch.equal(batch.next()[1], single.next()[0])


def test_eta_noise_seed_delta_reseeds() -> None:
    source = NoiseSource.for_seeds(SHAPE, [10], eta_noise_seed_delta=31337)
    assert torch.equal(source.next()[0], _randn(10 + 31337, SHAPE))


def test_generator_list_is_what_diffusers_draws_from() -> None:
    a = NoiseSource.for_seeds(SHAPE, [1, 2])
    b = NoiseSource.for_seeds(SHAPE, [1, 2])
    drawn = randn_tensor((2, *SHAPE), generator=a.generator_list(), device=torch.device("cpu"))
    assert torch.equal(drawn, b.next())
    half = NoiseSource.for_seeds(SHAPE, [1, 2]).next(dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, drawn.half())
