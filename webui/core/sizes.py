"""Sizes a request implies, from numbers alone (no torch, no pictures): what `types` validates and the
tasks then build. Imports nothing of Sfumato, so request validation stays at the bottom of the house.

Hires fix target (A1111's calculate_target_resolution), for a first pass of width x height:

    hr_resize_x = hr_resize_y = 0     int(width * hr_scale) x int(height * hr_scale)        "Hires upscale"
    only hr_resize_x                  hr_resize_x x (hr_resize_x * height // width)          "Hires resize"
    only hr_resize_y                  (hr_resize_y * width // height) x hr_resize_y
    both                              scaled to cover hr_resize_x x hr_resize_y keeping the aspect ratio,
                                      then the latents are cropped (centred) to the requested size

The second pass works on latents of (upscale_to // 8 - truncate): the output is that x 8, so a target
that is not a multiple of 8 comes out rounded down to one (as in A1111). 8 is the latent downscale of
every family so far (families.base.LatentFormat.downscale).

Outpainting canvas: the image grows by `pixels` on each chosen side, then rounds up to a multiple of 8;
the rounding surplus is shared between the two sides of an axis in proportion to what each asked for
(A1111's "poor man's outpainting"); when neither side of an axis was chosen it goes right / bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LATENT_DOWNSCALE = 8
OUTPAINT_DIRECTIONS = ("left", "right", "up", "down")


@dataclass(frozen=True)
class HiresTarget:
    upscale_to_x: int  # the size the first pass is upscaled to
    upscale_to_y: int
    truncate_x: int = 0  # latent columns/rows cropped off afterwards (both hr_resize sides given)
    truncate_y: int = 0

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the second pass's latents."""
        d = LATENT_DOWNSCALE
        return self.upscale_to_y // d - self.truncate_y, self.upscale_to_x // d - self.truncate_x

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the final image."""
        h, w = self.latent_size
        return w * LATENT_DOWNSCALE, h * LATENT_DOWNSCALE


def hires_target(
    width: int, height: int, hr_scale: float, hr_resize_x: int = 0, hr_resize_y: int = 0
) -> HiresTarget:
    if hr_resize_x == 0 and hr_resize_y == 0:
        return HiresTarget(int(width * hr_scale), int(height * hr_scale))
    if hr_resize_y == 0:
        return HiresTarget(hr_resize_x, hr_resize_x * height // width)
    if hr_resize_x == 0:
        return HiresTarget(hr_resize_y * width // height, hr_resize_y)
    if width / height < hr_resize_x / hr_resize_y:  # wider target: fit the width, crop the height
        to_x, to_y = hr_resize_x, hr_resize_x * height // width
    else:
        to_x, to_y = hr_resize_y * width // height, hr_resize_y
    d = LATENT_DOWNSCALE
    return HiresTarget(to_x, to_y, (to_x - hr_resize_x) // d, (to_y - hr_resize_y) // d)


@dataclass(frozen=True)
class CanvasGeometry:
    width: int
    height: int
    left: int  # where the original's top-left corner lands
    top: int

    def original_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        return self.left, self.top, self.left + size[0], self.top + size[1]


def _split(size: int, lo_px: int, hi_px: int) -> tuple[int, int]:
    """(before, total) for one axis: the canvas size rounded up to 8, the surplus shared."""
    total = math.ceil((size + lo_px + hi_px) / LATENT_DOWNSCALE) * LATENT_DOWNSCALE
    extra = total - size
    if lo_px and hi_px:
        return extra * lo_px // (lo_px + hi_px), total
    if lo_px:
        return extra, total
    return 0, total


def canvas_geometry(width: int, height: int, pixels: int, directions: Sequence[str]) -> CanvasGeometry:
    """Where an image of width x height lands on its outpainting canvas."""
    bad = [d for d in directions if d not in OUTPAINT_DIRECTIONS]
    if bad:
        raise ValueError(f"unknown outpainting direction {bad[0]!r}: use {', '.join(OUTPAINT_DIRECTIONS)}")
    if pixels < 0:
        raise ValueError(f"outpainting pixels must be 0 or more, got {pixels}")
    left, cw = _split(width, pixels * ("left" in directions), pixels * ("right" in directions))
    top, ch = _split(height, pixels * ("up" in directions), pixels * ("down" in directions))
    return CanvasGeometry(cw, ch, left, top)


def mask_fits(mask_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """A mask fits its image when it has the image's size or its aspect ratio to within a pixel."""
    (mw, mh), (iw, ih) = mask_size, image_size
    if (mw, mh) == (iw, ih):
        return True
    # The mask scaled to the image's width must land within a pixel of its height (and vice versa).
    return abs(mh * iw / mw - ih) <= 1.0 or abs(mw * ih / mh - iw) <= 1.0
