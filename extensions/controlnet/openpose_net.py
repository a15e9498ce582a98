"""The CMU OpenPose body network (Cao et al. 2017, the COCO 18-keypoint model) from
`body_pose_model.pth` in models/ControlNet/annotators, and the part-confidence and part-affinity maps it
gives for an image, at the image's size.

The file is a flat state dict, one entry per conv named as in CMU's Caffe model (`conv1_1.weight`,
`conv5_5_CPM_L1.bias`, `Mconv7_stage6_L2.weight`, ...; 92 convs, 184 keys); the reference code holds
them in blocks (`model0`, `model1_1` ... `model6_2`) and renames on loading, so a state dict saved from
those blocks (`model0.conv1_1.weight`) is read too. The layers:

    backbone   VGG-19's first ten convs (conv1_1 ... conv4_2, 3x3, max-pool after 1_2, 2_2, 3_4: stride 8),
               then conv4_3_CPM (-> 4W) and conv4_4_CPM (-> 2W) = the features F
    stage 1    two branches on F, L1 (38 affinity channels: 19 limbs x (x, y)) and L2 (19 heat maps:
               18 parts + background): conv5_1..3_CPM_Lb 3x3 (2W), conv5_4 1x1 (8W), conv5_5 1x1
    stages 2-6 each branch on [L1, L2, F] (38 + 19 + 2W channels): Mconv1..5_stageS_Lb 7x7 (2W),
               Mconv6 1x1 (2W), Mconv7 1x1 -> 38 / 19

Every conv is followed by a ReLU except each stage's last ones; the reference implementation also puts
one after the final heat-map conv (Mconv7_stage6_L2: its list of layers without ReLU names the L1 one
twice), and the maps it was tuned on come from that, so it is kept. W is 64 in the real file; it is read
from the weights, so a narrower network with the same key names loads too.

Input, as sd-webui-controlnet feeds it: BGR, scaled so the height is 184 px (0.5 x 368), padded right and
down with grey 128 to a multiple of 8, as x / 256 - 0.5. The stride-8 outputs are upsampled by 8, the
padding cropped, and the maps resized to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .annotator_files import checked, load_strict, read_state
from .openpose_cpm import resize

PAFS, HEATMAPS = 38, 19
STAGES = 6
BOX, SCALE, STRIDE, PAD_VALUE = 368, 0.5, 8, 128
MARKER = "conv1_1.weight"


def _backbone(w: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of the backbone convs; "pool" entries are 2x2 max-pools."""
    return [
        ("conv1_1", 3, w, 3), ("conv1_2", w, w, 3), ("pool", 0, 0, 0),
        ("conv2_1", w, 2 * w, 3), ("conv2_2", 2 * w, 2 * w, 3), ("pool", 0, 0, 0),
        ("conv3_1", 2 * w, 4 * w, 3), ("conv3_2", 4 * w, 4 * w, 3), ("conv3_3", 4 * w, 4 * w, 3),
        ("conv3_4", 4 * w, 4 * w, 3), ("pool", 0, 0, 0),
        ("conv4_1", 4 * w, 8 * w, 3), ("conv4_2", 8 * w, 8 * w, 3),
        ("conv4_3_CPM", 8 * w, 4 * w, 3), ("conv4_4_CPM", 4 * w, 2 * w, 3),
    ]  # fmt: skip


def _branch(stage: int, branch: int, w: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of one stage's branch (1: affinity fields, 2: heat maps)."""
    out = PAFS if branch == 1 else HEATMAPS
    f = 2 * w  # the features' width
    if stage == 1:
        return [(f"conv5_{i}_CPM_L{branch}", f, f, 3) for i in (1, 2, 3)] + [
            (f"conv5_4_CPM_L{branch}", f, 8 * w, 1), (f"conv5_5_CPM_L{branch}", 8 * w, out, 1)
        ]  # fmt: skip
    first = PAFS + HEATMAPS + f
    return [
        *((f"Mconv{i}_stage{stage}_L{branch}", first if i == 1 else f, f, 7) for i in range(1, 6)),
        (f"Mconv6_stage{stage}_L{branch}", f, f, 1), (f"Mconv7_stage{stage}_L{branch}", f, out, 1),
    ]  # fmt: skip


class BodyPoseNet(nn.Module):
    """The convs are attributes named as in the file, so its keys load as they are."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.backbone = [n for n, *_ in _backbone(width)]
        self.branches = {
            (s, b): [n for n, *_ in _branch(s, b, width)] for s in range(1, STAGES + 1) for b in (1, 2)
        }
        layers = _backbone(width) + [c for s, b in self.branches for c in _branch(s, b, width)]
        for name, cin, cout, k in layers:
            if name != "pool":
                self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

    def _run(self, names: list[str], x: torch.Tensor, last_relu: bool) -> torch.Tensor:
        for i, name in enumerate(names):
            if name == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, name)(x)
            if i < len(names) - 1 or last_relu:
                x = F.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(affinity fields, heat maps) of the last stage, at 1/8 of the input size."""
        features = self._run(self.backbone, x, last_relu=True)
        h = features
        for s in range(1, STAGES + 1):
            paf = self._run(self.branches[s, 1], h, last_relu=False)
            heat = self._run(self.branches[s, 2], h, last_relu=s == STAGES)
            h = torch.cat([paf, heat, features], 1)
        return paf, heat


def load_body_net(path: Path) -> BodyPoseNet:
    """The network in `path` (eval mode, fp32, CPU); AnnotatorFileError naming the file if it is not one."""
    return body_net_from(read_state(path), path)


def body_net_from(sd: dict[str, torch.Tensor], path: Path) -> BodyPoseNet:
    """The network holding `sd` (the state dict of `path`, named in errors)."""
    sd = checked(sd, path, MARKER, "an OpenPose body model", flat=True)
    return load_strict(BodyPoseNet(int(sd[MARKER].shape[0])), sd, path)


@torch.no_grad()
def body_maps(
    net: BodyPoseNet, rgb: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps H x W x 19, affinity fields H x W x 38) of an RGB uint8 image, at its size; the network
    runs on `device`."""
    h, w = rgb.shape[:2]
    k = SCALE * BOX / h
    small = resize(np.ascontiguousarray(rgb[:, :, ::-1]), (max(1, int(w * k)), max(1, int(h * k))))
    sh, sw = small.shape[:2]
    padded = np.full((-(-sh // STRIDE) * STRIDE, -(-sw // STRIDE) * STRIDE, 3), PAD_VALUE, np.uint8)
    padded[:sh, :sw] = small
    x = torch.from_numpy(padded).float().div(256).sub(0.5).permute(2, 0, 1)[None].to(device)
    paf, heat = net(x)
    out = []
    for maps in (heat, paf):
        a = maps[0].permute(1, 2, 0).cpu().numpy()
        a = resize(a, (a.shape[1] * STRIDE, a.shape[0] * STRIDE))[:sh, :sw]
        out.append(resize(a, (w, h)))
    return out[0], out[1]
