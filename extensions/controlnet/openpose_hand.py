"""Hands for openpose_hand: CMU's hand keypoint network (Simon et al. 2017) from `hand_pose_model.pth`,
run on a square box around each wrist that the body's arm keypoints give, and the hands drawn as
sd-webui-controlnet draws them.

The network is the pose machine of openpose_cpm.py with 22 maps (21 keypoints + background), from a
flat state dict named as in CMU's Caffe model (`conv1_1.weight` ... `Mconv7_stage6.bias`, 104 keys).

The box (CMU's handDetector): centred a third of the forearm beyond the wrist, 1.5 x the longer of the
forearm and 0.9 x the upper arm wide, clipped to the image, kept if at least 20 px. The crop (BGR) is
blurred (sigma 0.8) and run at 184, 368, 552 and 736 px square (input x / 256 - 0.5); the stride-8 maps
are resized (Lanczos) to 128 x 128 and averaged (the reference upsamples them by 8 first, then shrinks
them to 128: the same maps within resampling error, at a fraction of the cost). Per keypoint: the map
smoothed (sigma 3) above 0.05, its 8-connected region holding the most heat, the hottest pixel there;
no region, no keypoint. 21 keypoints: the wrist, then four per finger from thumb to little finger, base
to tip.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from .annotator_files import read_state
from .openpose_cpm import PoseMachine, machine_from, resize
from .openpose_keypoints import Person

KEYPOINTS, MAPS = 21, 22
SCALES, BOX, STRIDE, GRID = (0.5, 1.0, 1.5, 2.0), 368, 8, 128
THRESHOLD = 0.05
RATIO_WRIST_ELBOW, MIN_BOX = 0.33, 20
EDGES = tuple(
    (0 if i % 4 == 0 else i, i + 1) for i in range(20)
)  # wrist -> each finger's base, then along the finger
EDGE_COLOURS = tuple(
    tuple(round(c * 255) for c in colorsys.hsv_to_rgb(i / len(EDGES), 1.0, 1.0)) for i in range(len(EDGES))
)
POINT_COLOUR = (0, 0, 255)

HandPoint = tuple[float, float]


class HandPoseNet(PoseMachine):
    """CMU's hand network (W = 64 in the real file)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__(width, MAPS)


def load_hand_net(path: Path) -> HandPoseNet:
    """The hand network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return hand_net_from(read_state(path), path)


def hand_net_from(sd: dict[str, torch.Tensor], path: Path) -> HandPoseNet:
    """The hand network holding `sd` (the state dict of `path`, named in errors)."""
    return machine_from(sd, path, MAPS, "an OpenPose hand model", HandPoseNet)


def boxes(person: Person, width: int, height: int) -> list[tuple[int, int, int, bool]]:
    """(x, y, size, is_left) of the square box around each hand whose shoulder, elbow and wrist were
    found (left hand first), in pixels of the body image."""
    out = []
    for shoulder, elbow, wrist, is_left in ((5, 6, 7, True), (2, 3, 4, False)):
        s, e, w = person.keypoints[shoulder], person.keypoints[elbow], person.keypoints[wrist]
        if s is None or e is None or w is None:
            continue
        size = 1.5 * max(math.dist(w[:2], e[:2]), 0.9 * math.dist(e[:2], s[:2]))
        x = max(0.0, w[0] + RATIO_WRIST_ELBOW * (w[0] - e[0]) - size / 2)
        y = max(0.0, w[1] + RATIO_WRIST_ELBOW * (w[1] - e[1]) - size / 2)
        size = min(size, width - x, height - y)
        if size >= MIN_BOX:
            out.append((int(x), int(y), int(size), is_left))
    return out


@torch.no_grad()
def hand_maps(net: HandPoseNet, bgr_crop: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The 22 maps (GRID x GRID x 22) of a square BGR crop, averaged over the four scales; the network
    runs on `device`."""
    blurred = cv2.GaussianBlur(bgr_crop, (0, 0), 0.8)
    total = np.zeros((GRID, GRID, MAPS))
    for scale in SCALES:
        side = int(scale * BOX)  # a multiple of 8: no padding
        x = torch.from_numpy(resize(blurred, (side, side))).float().div(256).sub(0.5)
        maps = net(x.permute(2, 0, 1)[None].to(device))[0].permute(1, 2, 0).cpu().numpy()
        total += resize(maps, (GRID, GRID)) / len(SCALES)
    return total


def hand_peaks(maps: np.ndarray, size: int) -> list[HandPoint | None]:
    """Each keypoint's position in a crop of `size` px from its GRID x GRID map, or None if absent."""
    out: list[HandPoint | None] = []
    for k in range(KEYPOINTS):
        raw = maps[:, :, k]
        above = (gaussian_filter(raw, sigma=3) > THRESHOLD).astype(np.uint8)
        count, labels = cv2.connectedComponents(above, connectivity=8)
        if count < 2:
            out.append(None)
            continue
        heat = [raw[labels == i].sum() for i in range(1, count)]
        region = np.where(labels == 1 + int(np.argmax(heat)), raw, 0.0)
        y, x = np.unravel_index(int(np.argmax(region)), region.shape)
        out.append((float(int(x * size / GRID)), float(int(y * size / GRID))))
    return out


def hands(
    net: HandPoseNet, person: Person, bgr: np.ndarray, device: torch.device | str = "cpu"
) -> dict[bool, list[HandPoint | None]]:
    """{is_left: 21 keypoints in body-image pixels} for the hands of `person` (the network on `device`)."""
    h, w = bgr.shape[:2]
    out = {}
    for x, y, size, is_left in boxes(person, w, h):
        points = hand_peaks(hand_maps(net, bgr[y : y + size, x : x + size], device), size)
        out[is_left] = [None if p is None else (p[0] + x, p[1] + y) for p in points]
    return out


def draw_hand(canvas: np.ndarray, points: list[HandPoint | None]) -> None:
    """One hand on `canvas` (RGB, in place): each bone a 2 px line in its hue, each keypoint a blue dot."""
    for (a, b), colour in zip(EDGES, EDGE_COLOURS, strict=True):
        pa, pb = points[a], points[b]
        if pa is not None and pb is not None:
            cv2.line(canvas, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), colour, thickness=2)
    for p in points:
        if p is not None:
            cv2.circle(canvas, (int(p[0]), int(p[1])), 4, POINT_COLOUR, thickness=-1)
