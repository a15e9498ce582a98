"""Hands for openpose_hand: CMU's hand keypoint network (Simon et al. 2017) from `hand_pose_model.pth`,
run on a square box around each wrist that the body's arm keypoints give, and the hands drawn as
sd-webui-controlnet draws them.

The file is a flat state dict named as in CMU's Caffe model (`conv1_1.weight` ... `conv5_3_CPM`, then
`conv6_1_CPM`, `conv6_2_CPM` and `Mconv1_stage2` ... `Mconv7_stage6`; 52 convs, 104 keys):

    backbone   VGG-19's first twelve convs (conv1_1 ... conv5_2; max-pool after 1_2, 2_2, 3_4: stride 8),
               conv5_3_CPM (-> 2W) = the features F
    stage 1    conv6_1_CPM 1x1 (8W), conv6_2_CPM 1x1 -> 22 maps (21 keypoints + background)
    stages 2-6 on [maps, F] (22 + 2W): Mconv1..5_stageS 7x7 (2W), Mconv6 1x1 (2W), Mconv7 1x1 -> 22

A ReLU follows every conv except each stage's last. W is 64 in the real file, read from the weights.

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
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from .annotator_files import checked, load_strict, read_state
from .openpose_keypoints import Person

KEYPOINTS, MAPS = 21, 22
STAGES = 6
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
MARKER = "conv6_2_CPM.weight"

HandPoint = tuple[float, float]


def _layers(w: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of every conv in order; "pool" entries are 2x2 max-pools."""
    f = 2 * w
    backbone = [
        ("conv1_1", 3, w, 3), ("conv1_2", w, w, 3), ("pool", 0, 0, 0),
        ("conv2_1", w, 2 * w, 3), ("conv2_2", 2 * w, 2 * w, 3), ("pool", 0, 0, 0),
        ("conv3_1", 2 * w, 4 * w, 3), *((f"conv3_{i}", 4 * w, 4 * w, 3) for i in (2, 3, 4)),
        ("pool", 0, 0, 0),
        ("conv4_1", 4 * w, 8 * w, 3), *((f"conv4_{i}", 8 * w, 8 * w, 3) for i in (2, 3, 4)),
        ("conv5_1", 8 * w, 8 * w, 3), ("conv5_2", 8 * w, 8 * w, 3), ("conv5_3_CPM", 8 * w, f, 3),
        ("conv6_1_CPM", f, 8 * w, 1), ("conv6_2_CPM", 8 * w, MAPS, 1),
    ]  # fmt: skip
    for s in range(2, STAGES + 1):
        backbone += [(f"Mconv{i}_stage{s}", MAPS + f if i == 1 else f, f, 7) for i in range(1, 6)]
        backbone += [(f"Mconv6_stage{s}", f, f, 1), (f"Mconv7_stage{s}", f, MAPS, 1)]
    return backbone


class HandPoseNet(nn.Module):
    """The convs are attributes named as in the file, so its keys load as they are."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.order = [n for n, *_ in _layers(width)]
        for name, cin, cout, k in _layers(width):
            if name != "pool":
                self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's 22 maps at 1/8 of the input size."""
        features = maps = x
        for name in self.order:
            if name == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            if name.startswith("Mconv1_"):
                x = torch.cat([maps, features], 1)
            x = getattr(self, name)(x)
            last = name == "conv6_2_CPM" or name.startswith("Mconv7_")
            if not last:
                x = F.relu(x)
            if name == "conv5_3_CPM":
                features = x
            if last:
                maps = x
        return maps


def load_hand_net(path: Path) -> HandPoseNet:
    """The hand network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not
    one."""
    return hand_net_from(read_state(path), path)


def hand_net_from(sd: dict[str, torch.Tensor], path: Path) -> HandPoseNet:
    """The hand network holding `sd` (the state dict of `path`, named in errors)."""
    sd = checked(sd, path, MARKER, "an OpenPose hand model", flat=True)
    return load_strict(HandPoseNet(int(sd[MARKER].shape[1]) // 8), sd, path)


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


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`a` (H x W x C) resized to `size` (w, h): area filter down, Lanczos up, channel by channel."""
    up = size[0] + size[1] > a.shape[0] + a.shape[1]
    interp = cv2.INTER_LANCZOS4 if up else cv2.INTER_AREA
    return np.stack([cv2.resize(a[:, :, c], size, interpolation=interp) for c in range(a.shape[2])], 2)


@torch.no_grad()
def hand_maps(net: HandPoseNet, bgr_crop: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The 22 maps (GRID x GRID x 22) of a square BGR crop, averaged over the four scales; the network
    runs on `device`."""
    blurred = cv2.GaussianBlur(bgr_crop, (0, 0), 0.8)
    total = np.zeros((GRID, GRID, MAPS))
    for scale in SCALES:
        side = int(scale * BOX)  # a multiple of 8: no padding
        x = torch.from_numpy(_resize(blurred, (side, side))).float().div(256).sub(0.5)
        maps = net(x.permute(2, 0, 1)[None].to(device))[0].permute(1, 2, 0).cpu().numpy()
        total += _resize(maps, (GRID, GRID)) / len(SCALES)
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
