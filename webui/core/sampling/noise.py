"""Seeds and noise as A1111 users know them: seed, variation seed (subseed), resize seed from.

Every random number is drawn on the CPU from a `torch.Generator` seeded for one image, and only then
moved to the target device and dtype. The same seed therefore gives the same latents on CPU, CUDA or
MPS, and image i of a batch is the same as a batch of one with its seed. This is A1111 with its setting
"Random number generator source: CPU"; its default source, GPU, draws other numbers (which vary with
the hardware), so images made that way cannot be reproduced here.

Initial noise for one image with seed s, subseed u, strength k, in latent shape (C, H, W):

    1. src = (C, from_h // 8, from_w // 8) with "resize seed from", else (C, H, W)
    2. noise = randn(src) from a fresh generator seeded with s
    3. if k != 0: noise = slerp(k, noise, randn(src) from a fresh generator seeded with u)
    4. with resize: canvas = randn((C, H, W)) from a fresh generator seeded with s; the overlapping
       window of noise is pasted into it centred: offset (H - h) // 2 rows and (W - w) // 2 columns
       (floor division; negative when the old size is larger, which crops the old noise instead). When
       the old size is larger by an odd number, A1111's window is one short and the last row/column
       keeps the canvas noise; that is reproduced.

This is A1111's `ImageRNG.first()` for its CPU source: the same draws, combined the same way (A1111 moves
each draw to the GPU before the slerp, so a variation may differ from it in the last bits). Its per-step
noise then continues the image's generator (see `NoiseSource`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

from webui.core.sizes import LATENT_DOWNSCALE

MAX_SEED: Final = 2**32 - 1
RANDOM_SEED: Final = -1
GENERATOR_SEED_LIMIT: Final = 2**64 - 1  # torch.Generator.manual_seed's range; seed + i may pass MAX_SEED
LATENT_SCALE: Final = LATENT_DOWNSCALE  # pixels per latent pixel (every family so far)
_PARALLEL: Final = 0.9995  # A1111's threshold on the mean cosine for falling back to lerp

Shape3 = tuple[int, int, int]


def validate_seed(seed: int, field: str = "seed") -> int:
    """`seed` if it is -1 (random) or in 0..MAX_SEED, else ValueError naming the field."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{field} must be an integer between -1 and {MAX_SEED}, got {seed!r}")
    if not RANDOM_SEED <= seed <= MAX_SEED:
        raise ValueError(f"{field} must be between -1 and {MAX_SEED}, got {seed}")
    return seed


def resolve_seed(seed: int, rng: random.Random | None = None, *, field: str = "seed") -> int:
    """A validated seed, with -1 replaced by a random one in 0..MAX_SEED (from `rng`, else the OS)."""
    validate_seed(seed, field)
    if seed != RANDOM_SEED:
        return seed
    return (rng or random.SystemRandom()).randint(0, MAX_SEED)


def batch_seeds(
    seed: int, subseed: int, batch_size: int, n_iter: int, *, subseed_strength: float = 0.0
) -> list[tuple[int, int]]:
    """(seed, subseed) of every image of a run, in order: batch b, position i is image b * batch_size + i.

    Image j uses seed + j and subseed + j: further batches continue the sequence. As in A1111, with a
    variation (subseed_strength != 0) the seed stays the same for every image and only the subseed
    advances, so a run explores variations of one image. Seeds may go past MAX_SEED; the generator
    accepts them (A1111 does not wrap either).
    """
    for name, value in (("seed", seed), ("subseed", subseed)):
        if validate_seed(value, name) == RANDOM_SEED:
            raise ValueError(f"{name} must be resolved (resolve_seed) before batching, got -1")
    if batch_size < 1 or n_iter < 1:
        raise ValueError(f"batch_size and n_iter must be at least 1, got {batch_size} and {n_iter}")
    step = 1 if subseed_strength == 0 else 0
    return [(seed + j * step, subseed + j) for j in range(batch_size * n_iter)]


def cpu_generator(seed: int) -> torch.Generator:
    if not 0 <= seed <= GENERATOR_SEED_LIMIT:
        raise ValueError(f"generator seed must be between 0 and {GENERATOR_SEED_LIMIT}, got {seed}")
    return torch.Generator(device="cpu").manual_seed(seed)


def _randn(seed: int, shape: Shape3) -> torch.Tensor:
    """The first noise of a fresh CPU generator seeded with `seed`, float32."""
    return torch.randn(shape, generator=cpu_generator(seed), dtype=torch.float32)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two (C, H, W) noises: `low` at 0, `high` at 1.

    As in A1111, vectors are normalised along dim 1 (height), so each (channel, column) pair of columns
    gets its own angle; if the cosines average above 0.9995 (the noises are the same, e.g. seed ==
    subseed), it falls back to linear interpolation. (A1111's fallback has the weights swapped, which
    makes no difference for equal noises, the only case where it runs; here it is a proper lerp.)
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > _PARALLEL:
        return low * (1.0 - val) + high * val
    omega = torch.acos(dot)
    so = torch.sin(omega)
    w_low = (torch.sin((1.0 - val) * omega) / so).unsqueeze(1)
    w_high = (torch.sin(val * omega) / so).unsqueeze(1)
    return w_low * low + w_high * high


def paste_centered(src: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """`canvas` (C, H, W) with the centred overlap of `src` (C, h, w) pasted in (A1111's window)."""
    _, h, w = src.shape
    _, big_h, big_w = canvas.shape
    dy, dx = (big_h - h) // 2, (big_w - w) // 2
    rows = h if dy >= 0 else h + 2 * dy
    cols = w if dx >= 0 else w + 2 * dx
    ty, tx = max(dy, 0), max(dx, 0)  # where the window lands on the canvas
    sy, sx = max(-dy, 0), max(-dx, 0)  # where it starts in src
    out = canvas.clone()
    out[:, ty : ty + rows, tx : tx + cols] = src[:, sy : sy + rows, sx : sx + cols]
    return out


def image_noise(
    shape: Shape3,
    seed: int,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Initial noise (C, H, W) of one image, float32 on the CPU (the module doc gives the recipe)."""
    src = shape
    if seed_resize_from is not None:
        from_w, from_h = seed_resize_from
        src = (shape[0], from_h // LATENT_SCALE, from_w // LATENT_SCALE)
    noise = _randn(seed, src)
    if subseed is not None and subseed_strength != 0:
        noise = slerp(subseed_strength, noise, _randn(subseed, src))
    if src != shape:
        noise = paste_centered(noise, _randn(seed, shape))
    return noise


def initial_noise(
    shape_per_image: Shape3,
    seeds: Sequence[int],
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial latents (B, C, H, W): image i from seeds[i] (and subseeds[i]) alone, then moved.

    `seed_resize_from` is (width, height) in pixels; None, or a non-positive side (A1111's API sends
    -1, its UI 0), means no resize. The result is not scaled by the scheduler's init_noise_sigma.
    """
    if len(shape_per_image) != 3 or min(shape_per_image) < 1:
        raise ValueError(f"shape_per_image must be (C, H, W) of positive sizes, got {shape_per_image}")
    if not seeds:
        raise ValueError("seeds must name at least one image")
    if not 0.0 <= subseed_strength <= 1.0:
        raise ValueError(f"subseed_strength must be between 0 and 1, got {subseed_strength}")
    if subseed_strength != 0 and (subseeds is None or len(subseeds) != len(seeds)):
        raise ValueError("a variation (subseed_strength > 0) needs one subseed per seed")
    resize = seed_resize_from
    if resize is not None and (resize[0] <= 0 or resize[1] <= 0):
        resize = None
    if resize is not None and (resize[0] < LATENT_SCALE or resize[1] < LATENT_SCALE):
        raise ValueError(f"seed_resize_from must be at least {LATENT_SCALE}x{LATENT_SCALE}, got {resize}")
    shape = (int(shape_per_image[0]), int(shape_per_image[1]), int(shape_per_image[2]))
    images = [
        image_noise(shape, seed, None if subseeds is None else subseeds[i], subseed_strength, resize)
        for i, seed in enumerate(seeds)
    ]
    return torch.stack(images).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class NoiseSource:
    """Per-step noise for ancestral/SDE samplers: one CPU generator per image, owned by one run.

    `for_seeds` gives each image a generator seeded with its own seed and advanced past the initial
    noise, exactly where A1111's (CPU source) per-image generator stands after `ImageRNG.first()`, so
    step noise continues that stream; with an eta noise seed delta (A1111's ENSD, e.g. 31337) the
    generators are instead fresh ones seeded with seed + delta, as A1111 does. Because every image has its
    own generator, its noise does not depend on its batch position (A1111's option "use per-image
    seeds for ancestral samplers"; here the only behaviour).

    How the loop uses it, for `SamplerInfo.step_noise == "generator"`:

        scheduler.step(eps, t, x, generator=source.generator_list())

    diffusers draws step noise with `randn_tensor(shape, generator=...)`, which takes a list of
    generators, one per batch element: it draws a (1, C, H, W) tensor from each generator on the CPU
    (they are CPU generators) and moves the batch to the sample's device; that is the same as
    `source.next()`. The UNet batch is [uncond, cond] but step() sees the B latents, so the list has B
    entries. Schedulers that take `variance_noise` (DPM++ 2M SDE, DDIM with eta > 0) may instead be given
    `variance_noise=source.next(device, dtype)`. The noise is drawn in the dtype diffusers asks for
    (model_output's, float32 for DPM++ 2M SDE); float16 CPU draws equal float32 draws rounded.
    DPM++ SDE ("brownian") does not use this: it is seeded by `make_scheduler(noise_seeds=seeds)`.

    The generators are stateful: make one NoiseSource per batch and never share it between runs.
    """

    shape: Shape3
    seeds: tuple[int, ...]
    generators: tuple[torch.Generator, ...]

    @classmethod
    def for_seeds(
        cls, shape_per_image: Shape3, seeds: Sequence[int], *, eta_noise_seed_delta: int = 0
    ) -> NoiseSource:
        if not seeds:
            raise ValueError("seeds must name at least one image")
        shape = (int(shape_per_image[0]), int(shape_per_image[1]), int(shape_per_image[2]))
        if eta_noise_seed_delta:
            generators = tuple(cpu_generator(s + eta_noise_seed_delta) for s in seeds)
        else:
            generators = tuple(cpu_generator(s) for s in seeds)
            for g in generators:  # skip the initial noise (one draw of the target shape)
                torch.randn(shape, generator=g, dtype=torch.float32)
        return cls(shape, tuple(int(s) for s in seeds), generators)

    def generator_list(self) -> list[torch.Generator]:
        """For `scheduler.step(..., generator=...)`: one generator per image, in batch order."""
        return list(self.generators)

    def next(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The next noise (B, C, H, W): one (C, H, W) draw from each image's generator, then moved."""
        batch = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(batch).to(device=device, dtype=dtype)
