"""One mask per detection, in ADetailer's order and with its meanings.

    detections -> keep those whose box covers [min_ratio, max_ratio] of the image
               -> the k largest boxes (k = 0: all), largest first
               -> a white box on black per detection
               -> shift by (x_offset right, y_offset up)
               -> dilate (value > 0) or erode (value < 0) with a value x value square; empty masks drop
               -> "None": one mask per detection; "Merge": their union; "Merge and Invert": its inverse

Unlike ADetailer, a shifted mask does not wrap round the opposite edge. Blur is not applied here: it is
the inpaint pass's `mask_blur`, as in ADetailer.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import cv2
import numpy as np
from PIL import Image

from .detectors import Detection


class MergeInvert(StrEnum):
    NONE = "None"
    MERGE = "Merge"
    MERGE_INVERT = "Merge and Invert"


def filter_by_ratio(
    dets: Sequence[Detection], low: float, high: float, size: tuple[int, int]
) -> list[Detection]:
    area = size[0] * size[1]
    return [d for d in dets if low <= d.area / area <= high]


def k_largest(dets: Sequence[Detection], k: int) -> list[Detection]:
    if k <= 0:
        return list(dets)
    return sorted(dets, key=lambda d: -d.area)[:k]


def box_mask(det: Detection, size: tuple[int, int]) -> np.ndarray:
    """(h, w) uint8: 255 inside the detection's box."""
    w, h = size
    arr = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = det.box
    arr[max(0, y1) : max(0, min(h, y2)), max(0, x1) : max(0, min(w, x2))] = 255
    return arr


def shift(arr: np.ndarray, x: int, y: int) -> np.ndarray:
    """Moved `x` pixels right and `y` pixels up; what moves out is lost, what comes in is black."""
    if x == 0 and y == 0:
        return arr
    h, w = arr.shape
    out = np.zeros_like(arr)
    dy = -y
    src = arr[max(0, -dy) : h - max(0, dy), max(0, -x) : w - max(0, x)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, x) : max(0, x) + src.shape[1]] = src
    return out


def dilate_erode(arr: np.ndarray, value: int) -> np.ndarray:
    if value == 0:
        return arr
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (abs(value), abs(value)))
    return cv2.dilate(arr, kernel) if value > 0 else cv2.erode(arr, kernel)


def merge_invert(masks: list[np.ndarray], mode: MergeInvert) -> list[np.ndarray]:
    if mode is MergeInvert.NONE or not masks:
        return masks
    merged = np.maximum.reduce(masks)
    return [merged] if mode is MergeInvert.MERGE else [255 - merged]


def region_masks(
    dets: Sequence[Detection],
    size: tuple[int, int],
    *,
    min_ratio: float = 0.0,
    max_ratio: float = 1.0,
    k_largest_n: int = 0,
    x_offset: int = 0,
    y_offset: int = 0,
    dilate: int = 4,
    mode: MergeInvert = MergeInvert.NONE,
) -> list[Image.Image]:
    """The "L" masks (white = repaint) for the detections on an image of `size` (w, h)."""
    kept = k_largest(filter_by_ratio(dets, min_ratio, max_ratio, size), k_largest_n)
    arrs = [dilate_erode(shift(box_mask(d, size), x_offset, y_offset), dilate) for d in kept]
    arrs = [a for a in arrs if a.any()]
    return [Image.fromarray(a) for a in merge_invert(arrs, mode) if a.any()]
