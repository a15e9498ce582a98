"""The single-branch convolutional pose machine that CMU's hand (Simon et al. 2017, hand_pose_model.pth)
and face (facenet.pth) keypoint networks share; they differ only in their number of maps M (hand: 21
keypoints + background = 22; face: 70 landmarks + background = 71).

The files are flat state dicts named as in CMU's Caffe models (52 convs, 104 keys):

    backbone   VGG-19's first twelve convs (conv1_1 ... conv5_2; max-pool after 1_2, 2_2, 3_4: stride 8),
               conv5_3_CPM (-> 2W) = the features F
    stage 1    conv6_1_CPM 1x1 (8W), conv6_2_CPM 1x1 -> M maps
    stages 2-6 on [maps, F] (M + 2W): Mconv1..5_stageS 7x7 (2W), Mconv6 1x1 (2W), Mconv7 1x1 -> M

A ReLU follows every conv except each stage's last. W is 64 in the real files; it is read from the
weights (conv6_2_CPM's input is 8W), and so is M (its output), so that a file of the other network is
refused by name before its shapes are compared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .annotator_files import AnnotatorFileError, checked, load_strict

STAGES = 6
MARKER = "conv6_2_CPM.weight"


def _layers(w: int, maps: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of every conv in order; "pool" entries are 2x2 max-pools."""
    f = 2 * w
    layers = [
        ("conv1_1", 3, w, 3), ("conv1_2", w, w, 3), ("pool", 0, 0, 0),
        ("conv2_1", w, 2 * w, 3), ("conv2_2", 2 * w, 2 * w, 3), ("pool", 0, 0, 0),
        ("conv3_1", 2 * w, 4 * w, 3), *((f"conv3_{i}", 4 * w, 4 * w, 3) for i in (2, 3, 4)),
        ("pool", 0, 0, 0),
        ("conv4_1", 4 * w, 8 * w, 3), *((f"conv4_{i}", 8 * w, 8 * w, 3) for i in (2, 3, 4)),
        ("conv5_1", 8 * w, 8 * w, 3), ("conv5_2", 8 * w, 8 * w, 3), ("conv5_3_CPM", 8 * w, f, 3),
        ("conv6_1_CPM", f, 8 * w, 1), ("conv6_2_CPM", 8 * w, maps, 1),
    ]  # fmt: skip
    for s in range(2, STAGES + 1):
        layers += [(f"Mconv{i}_stage{s}", maps + f if i == 1 else f, f, 7) for i in range(1, 6)]
        layers += [(f"Mconv6_stage{s}", f, f, 1), (f"Mconv7_stage{s}", f, maps, 1)]
    return layers


class PoseMachine(nn.Module):
    """The convs are attributes named as in the file, so its keys load as they are."""

    def __init__(self, width: int, maps: int) -> None:
        super().__init__()
        self.order = [n for n, *_ in _layers(width, maps)]
        for name, cin, cout, k in _layers(width, maps):
            if name != "pool":
                self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's maps at 1/8 of the input size."""
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


N = TypeVar("N", bound="PoseMachine")


def machine_from(sd: dict[str, torch.Tensor], path: Path, maps: int, what: str, net: Callable[[int], N]) -> N:
    """`net(width)` holding `sd` (the state dict of `path`, named in errors), whose networks give `maps`
    maps; AnnotatorFileError naming the file if it is not `what` (another number of maps)."""
    sd = checked(sd, path, MARKER, what, flat=True)
    cout, cin = sd[MARKER].shape[:2]
    if cout != maps:
        raise AnnotatorFileError(f"{path.name}: not {what} ({cout} maps, not {maps})")
    return load_strict(net(int(cin) // 8), sd, path)


def resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`a` (H x W x C) resized to `size` (w, h): area filter down, Lanczos up, channel by channel."""
    up = size[0] + size[1] > a.shape[0] + a.shape[1]
    interp = cv2.INTER_LANCZOS4 if up else cv2.INTER_AREA
    return np.stack([cv2.resize(a[:, :, c], size, interpolation=interp) for c in range(a.shape[2])], 2)
