"""Find faces, align each to a 512x512 crop, paste a restored crop back with a feathered mask.

Detection uses OpenCV's frontal-face Haar cascade (shipped inside opencv-python-headless, so nothing is
downloaded); inside each face box the eye cascade looks for the two eyes. Alignment is a similarity
transform (rotation, uniform scale, shift) onto the standard 5-point FFHQ template at 512 px:

- both eyes found: the eye centres map exactly onto the template's eye points (a similarity is fixed by
  two point pairs), so a tilted face comes out upright, as GFPGAN and CodeFormer were trained;
- otherwise: the box alone (no rotation): its centre goes to the template's centre and its width to
  `BOX_WIDTH_512` pixels. No offline detector here gives nose or mouth landmarks.

Paste-back warps the restored crop and a feathered mask (1 in the middle, falling to 0 over
`FEATHER` pixels of the 512 crop) back through the inverse transform and blends; pixels the mask does
not reach keep their exact original values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
from PIL import Image

FACE_SIZE: Final = 512
# FFHQ's 5 points at 512 px: left eye, right eye, nose tip, left and right mouth corners (x, y).
FFHQ_TEMPLATE_512: Final = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
TEMPLATE_CENTRE: Final = FFHQ_TEMPLATE_512.mean(axis=0)
BOX_WIDTH_512: Final = 250.0  # a Haar face box (brows to chin) spans about this much of the template
FEATHER: Final = 32  # pixels of the 512 crop over which the paste-back mask falls to 0
FILL: Final = (135, 133, 132)  # what the crop shows beyond the picture's edge (facexlib's grey)


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None  # (left, right) in image pixels
    affine: np.ndarray  # 2x3: image pixels -> the 512 crop

    @property
    def aligned_by(self) -> str:
        return "eyes" if self.eyes is not None else "box"


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {name} could not be loaded")
    return cascade


def detect_faces(image: Image.Image, max_faces: int = 16) -> list[Face]:
    """Frontal faces, largest first, each with its alignment onto the 512 template."""
    gray = cv2.equalizeHist(np.asarray(image.convert("L")))
    min_side = max(24, min(gray.shape) // 24)
    boxes = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
    )
    eye_cascade = _cascade("haarcascade_eye.xml")
    rows = sorted(np.asarray(boxes).reshape(-1, 4).tolist(), key=lambda b: -b[2] * b[3])[:max_faces]
    faces = []
    for x, y, w, h in rows:
        eyes = _eyes(eye_cascade, gray, int(x), int(y), int(w), int(h))
        affine = eye_affine(*eyes) if eyes is not None else box_affine(x, y, w, h)
        faces.append(Face((int(x), int(y), int(x + w), int(y + h)), eyes, affine))
    return faces


def _eyes(
    cascade: cv2.CascadeClassifier, gray: np.ndarray, x: int, y: int, w: int, h: int
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The two eye centres in the upper part of a face box, or None unless exactly one per side."""
    top = gray[y : y + int(h * 0.6), x : x + w]
    found = cascade.detectMultiScale(top, scaleFactor=1.1, minNeighbors=5, minSize=(w // 8, w // 8))
    centres = [(x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4)]
    left = [c for c in centres if c[0] < x + w / 2]
    right = [c for c in centres if c[0] >= x + w / 2]
    if len(left) != 1 or len(right) != 1:
        return None
    (lx, ly), (rx, ry) = left[0], right[0]
    if abs(ly - ry) > 0.5 * (rx - lx):  # more tilted than ~27 degrees: a false eye
        return None
    return (float(lx), float(ly)), (float(rx), float(ry))


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) mapping two points `src` onto `dst`."""
    s0, s1 = complex(*src[0]), complex(*src[1])
    d0, d1 = complex(*dst[0]), complex(*dst[1])
    a = (d1 - d0) / (s1 - s0)  # rotation and scale as one complex factor
    b = d0 - a * s0
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def eye_affine(left: tuple[float, float], right: tuple[float, float]) -> np.ndarray:
    return similarity(np.array([left, right]), FFHQ_TEMPLATE_512[:2])


def box_affine(x: float, y: float, w: float, h: float) -> np.ndarray:
    scale = BOX_WIDTH_512 / max(w, h)
    cx, cy = x + w / 2, y + h / 2
    tx, ty = TEMPLATE_CENTRE
    return np.array([[scale, 0.0, tx - scale * cx], [0.0, scale, ty - scale * cy]], dtype=np.float64)


def crop(image: np.ndarray, face: Face) -> np.ndarray:
    """The face as a 512x512 RGB uint8 crop."""
    return cv2.warpAffine(
        image,
        face.affine,
        (FACE_SIZE, FACE_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=FILL,
    )


def feather_mask() -> np.ndarray:
    """512x512 float32: 1 inside, a smooth fall to exactly 0 over FEATHER pixels at the edge."""
    ramp = np.minimum(np.arange(FACE_SIZE) + 0.5, FACE_SIZE - np.arange(FACE_SIZE) - 0.5)
    ramp = np.clip((ramp - 2) / FEATHER, 0.0, 1.0)  # 2 px of zero: warping blurs the edge by one
    ramp = 0.5 - 0.5 * np.cos(math.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def paste(image: np.ndarray, restored: np.ndarray, face: Face) -> np.ndarray:
    """`image` (HxWx3 uint8) with the restored 512 crop blended back where the face was."""
    h, w = image.shape[:2]
    inverse = cv2.invertAffineTransform(face.affine)
    back = cv2.warpAffine(restored, inverse, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(feather_mask(), inverse, (w, h), flags=cv2.INTER_LINEAR)
    inside = mask > 0
    out = image.copy()
    m = mask[inside][:, None]
    blended = image[inside].astype(np.float32) * (1 - m) + back[inside].astype(np.float32) * m
    out[inside] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
