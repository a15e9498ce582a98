"""The contact sheet A1111 saves beside a batch: images in a near-square grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) for n images: rows = round(sqrt(n)), as A1111 lays out its grids."""
    if n < 1:
        raise ValueError("a grid needs at least one image")
    rows = max(1, round(math.sqrt(n)))
    return rows, math.ceil(n / rows)


def image_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Paste the images row by row on a black canvas sized by the first image."""
    rows, cols = grid_shape(len(images))
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return grid
