"""YOLOv8 detection output, decoded: letterbox in, boxes out (ultralytics' exported-model conventions).

An ultralytics YOLOv8 export takes one RGB image in [0, 1], letterboxed to a square (scaled to fit,
centred, padded with grey 114), shaped (1, 3, S, S). Its first output is (1, 4 + classes [+ 32], N):
for each of N candidates a box (centre x, centre y, width, height, in input pixels) and one score per
class (already sigmoid-ed; no objectness). Segmentation exports add 32 mask coefficients per candidate
and a second output (the prototypes); only the boxes are used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
MASK_COEFFICIENTS = 32  # rows a segmentation export adds after the class scores


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits inside the square input: scale, then offset."""

    scale: float
    pad_x: int
    pad_y: int

    def to_image(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """(n, 4) x1 y1 x2 y2 in input pixels -> the original image's pixels, clipped to it."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """An (h, w, 3) uint8 RGB image -> the (1, 3, size, size) float32 input and its placement."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = round(w * scale), round(h * scale)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    blob = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return np.ascontiguousarray(blob), Letterbox(scale, pad_x, pad_y)


def class_count(rows: int, segmentation: bool) -> int:
    """Classes in an output with `rows` rows per candidate."""
    n = rows - 4 - (MASK_COEFFICIENTS if segmentation else 0)
    if n < 1:
        raise ValueError(f"an output with {rows} rows per candidate is not a YOLOv8 detection output")
    return n


def decode(
    output: np.ndarray, *, confidence: float, iou: float, segmentation: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (n, 4) x1 y1 x2 y2 in input pixels, confidences (n,), classes (n,)) kept after the
    confidence threshold and per-class non-maximum suppression, most confident first."""
    if output.ndim != 3 or output.shape[0] != 1:
        raise ValueError(f"expected a (1, 4 + classes, candidates) output, got shape {output.shape}")
    preds = output[0].T.astype(np.float32)  # (N, rows)
    nc = class_count(preds.shape[1], segmentation)
    scores = preds[:, 4 : 4 + nc]
    classes = scores.argmax(axis=1)
    conf = scores[np.arange(len(preds)), classes]
    keep = conf >= confidence
    preds, classes, conf = preds[keep], classes[keep], conf[keep]
    if not len(preds):
        empty = np.zeros((0, 4), np.float64)
        return empty, np.zeros(0, np.float32), np.zeros(0, np.int64)
    cx, cy, w, h = preds[:, 0], preds[:, 1], preds[:, 2], preds[:, 3]
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    chosen = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), conf.tolist(), classes.tolist(), float(confidence), float(iou)
    )
    idx = np.asarray(chosen, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-conf[idx], kind="stable")]
    boxes = np.stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]], axis=1)
    return boxes[idx].astype(np.float64), conf[idx], classes[idx].astype(np.int64)
