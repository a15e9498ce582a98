"""Faces for openpose_face and openpose_full: CMU's face landmark network from `facenet.pth`, run on a
square box around each person's head that the body's nose, eyes and ears give, and the faces drawn as
sd-webui-controlnet draws them.

The network is the pose machine of openpose_cpm.py with 71 maps (70 landmarks + background), from a flat
state dict named as in CMU's Caffe model (`conv1_1.weight` ... `Mconv7_stage6.bias`, 104 keys; the
same names as the hand network's, told apart by conv6_2_CPM's 71 outputs).

The box (sd-webui-controlnet's face detection from the body pose), for a person whose nose and at least
one eye or ear were found: half its side is the largest of 3 x an eye's and 1.5 x an ear's distance from
the nose (the larger of |dx| and |dy|); the square of that side centred on the nose has its top-left
corner moved into the image, then the part past the right or bottom edge is cut off (so a box at those
edges is not square); a side under 20 px, no face. The crop (BGR) is resized to 384 x 384 (area filter
down, Lanczos up; input x / 256 - 0.5), and the last stage's stride-8 maps are resized (bilinear, corners
aligned) to the crop's size. Per landmark: the hottest pixel of its map if above 0.05, else none. The
reference also returns the background map's peak as a 71st point and drops a missing landmark from its
list (the later ones move up); here there are 70 in their places, a missing one None, as OpenPose's
`face_keypoints_2d` has them. The landmarks are drawn as white dots of radius 3 (after the hands).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .annotator_files import read_state
from .openpose_cpm import PoseMachine, machine_from, resize
from .openpose_keypoints import Person

LANDMARKS, MAPS = 70, 71
INPUT = 384
THRESHOLD = 0.05
EYE_SCALE, EAR_SCALE, MIN_BOX = 3.0, 1.5, 20
NOSE, EYES, EARS = 0, (14, 15), (16, 17)
DOT_RADIUS, DOT_COLOUR = 3, (255, 255, 255)

FacePoint = tuple[float, float]


class FaceNet(PoseMachine):
    """CMU's face network (W = 64 in the real file)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__(width, MAPS)


def load_face_net(path: Path) -> FaceNet:
    """The face network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return face_net_from(read_state(path), path)


def face_net_from(sd: dict[str, torch.Tensor], path: Path) -> FaceNet:
    """The face network holding `sd` (the state dict of `path`, named in errors)."""
    return machine_from(sd, path, MAPS, "an OpenPose face model", FaceNet)


def face_box(person: Person, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the box around the face of `person` in pixels of the body image (width x height),
    or None: no nose, no eye or ear, or too small."""
    nose = person.keypoints[NOSE]
    if nose is None:
        return None
    half = 0.0
    for parts, scale in ((EYES, EYE_SCALE), (EARS, EAR_SCALE)):
        for part in parts:
            p = person.keypoints[part]
            if p is not None:
                half = max(half, scale * max(abs(nose[0] - p[0]), abs(nose[1] - p[1])))
    side = 2 * half
    if side < MIN_BOX:  # also: no eye and no ear
        return None
    x, y = max(0.0, nose[0] - half), max(0.0, nose[1] - half)
    return int(x), int(y), int(min(side, width - x)), int(min(side, height - y))


@torch.no_grad()
def face_maps(net: FaceNet, bgr_crop: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The 71 maps (h x w x 71) of a BGR crop (h x w), at its size; the network runs on `device`."""
    h, w = bgr_crop.shape[:2]
    x = torch.from_numpy(resize(bgr_crop, (INPUT, INPUT))).float().div(256).sub(0.5)
    maps = net(x.permute(2, 0, 1)[None].to(device))
    maps = F.interpolate(maps, (h, w), mode="bilinear", align_corners=True)
    return maps[0].permute(1, 2, 0).cpu().numpy()


def face_peaks(maps: np.ndarray) -> list[FacePoint | None]:
    """Each landmark's (x, y) in the crop from its map (h x w x 71), or None if nowhere above THRESHOLD."""
    out: list[FacePoint | None] = []
    for k in range(LANDMARKS):
        heat = maps[:, :, k]
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        out.append((float(x), float(y)) if heat[y, x] > THRESHOLD else None)
    return out


def face(
    net: FaceNet, person: Person, bgr: np.ndarray, device: torch.device | str = "cpu"
) -> list[FacePoint | None] | None:
    """The 70 landmarks of the face of `person` in body-image pixels (the network on `device`), or None if
    the body gives no face box."""
    box = face_box(person, bgr.shape[1], bgr.shape[0])
    if box is None:
        return None
    x, y, w, h = box
    points = face_peaks(face_maps(net, bgr[y : y + h, x : x + w], device))
    return [None if p is None else (p[0] + x, p[1] + y) for p in points]


def draw_face(canvas: np.ndarray, points: list[FacePoint | None]) -> None:
    """One face on `canvas` (RGB, in place): each landmark a white dot."""
    for p in points:
        if p is not None:
            cv2.circle(canvas, (int(p[0]), int(p[1])), DOT_RADIUS, DOT_COLOUR, thickness=-1)
