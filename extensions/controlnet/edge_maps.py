"""What the soft-edge preprocessors (hed.py, pidinet.py) do with their network's edge map, as
sd-webui-controlnet does it.

The network gives an edge probability in [0, 1] per pixel. Three finishes:

- "soft" (softedge_hed, softedge_pidinet): the probability times 255.
- "safe" (softedge_hedsafe, softedge_pidisafe): the probability quantised to three levels first
  (`safe_step`: below 1/3 -> 0, below 2/3 -> 0.5, else 1), which hides the faint texture an image's
  own noise leaves in the map.
- "scribble" (scribble_hed, scribble_pidinet): the soft map thinned by non-maximum suppression
  (`thin`, threshold 127 after a blur of sigma 3), then blurred again (sigma 3) and every pixel above 4
  made white: bold white strokes on black, like a hand-drawn scribble.
"""

from __future__ import annotations

import cv2
import numpy as np

FINISHES = ("soft", "safe", "scribble")
SAFE_STEPS = 2
SCRIBBLE_THRESHOLD, SCRIBBLE_SIGMA, SCRIBBLE_KEEP = 127, 3.0, 4
# the four directions a ridge is looked across: the pixel and its two neighbours along each line
_LINES = tuple(
    np.array(k, dtype=np.uint8)
    for k in (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],  # horizontal
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],  # vertical
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # diagonal
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],  # anti-diagonal
    )
)


def safe_step(edge: np.ndarray, steps: int = SAFE_STEPS) -> np.ndarray:
    """`edge` (>= 0) quantised to multiples of 1/steps: floor(edge * (steps + 1)) / steps (so 1.0 maps
    to 1.5, clipped later)."""
    return np.floor(edge.astype(np.float32) * float(steps + 1)) / float(steps)


def thin(edge: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """Non-maximum suppression: `edge` blurred (sigma), a pixel kept where it is not below its two
    neighbours along at least one of four directions, then white (255) where it is above `threshold`,
    black elsewhere (uint8)."""
    smooth = cv2.GaussianBlur(edge.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(smooth)
    for line in _LINES:
        peak = cv2.dilate(smooth, line) == smooth
        kept[peak] = smooth[peak]
    return np.where(kept > threshold, 255, 0).astype(np.uint8)


def scribble(soft: np.ndarray) -> np.ndarray:
    """White strokes on black (uint8, 0 or 255) from a soft edge map (uint8)."""
    lines = cv2.GaussianBlur(thin(soft, SCRIBBLE_THRESHOLD, SCRIBBLE_SIGMA), (0, 0), SCRIBBLE_SIGMA)
    return np.where(lines > SCRIBBLE_KEEP, 255, 0).astype(np.uint8)


def finish(edge: np.ndarray, how: str) -> np.ndarray:
    """The uint8 map (H x W) of an edge probability map in [0, 1] for finish `how` (FINISHES)."""
    if how not in FINISHES:
        raise ValueError(f"unknown finish {how!r}; valid: {', '.join(FINISHES)}")
    if how == "safe":
        edge = safe_step(edge)
    soft = (edge * 255.0).clip(0, 255).astype(np.uint8)
    return scribble(soft) if how == "scribble" else soft
