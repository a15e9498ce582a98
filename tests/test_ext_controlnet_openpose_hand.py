"""openpose_hand: CMU's hand network loaded strictly from a tiny hand_pose_model.pth in the real key
layout, the hand boxes from a body's arms, hand keypoints from maps built here, the hands drawn in
sd-webui-controlnet's colours, and the preprocessor end to end."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.fixtures_annotators import POSE_WIDTH, annotator_modules, write_annotators
from tests.test_ext_controlnet import drawing


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("hand-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hand-models")
    write_annotators(cn, d)
    return d


def arms(cn: SimpleNamespace, points: dict[int, tuple[float, float]]) -> SimpleNamespace:
    kp = tuple((*points[i], 1.0) if i in points else None for i in range(18))
    return cn.openpose_keypoints.Person(kp, 10.0, len(points))


def test_hand_model_loads_strictly_in_the_real_layout(cn: SimpleNamespace, models_dir: Path) -> None:
    folder = models_dir / "ControlNet" / "annotators"
    sd = torch.load(folder / "hand_pose_model.pth", weights_only=True)
    with torch.device("meta"):
        real = cn.openpose_hand.HandPoseNet(64).state_dict()
    assert real.keys() == sd.keys() and len(sd) == 104  # 52 convs, flat names as in CMU's Caffe model
    shapes = {"conv4_4.weight": (512, 512, 3, 3), "conv5_3_CPM.weight": (128, 512, 3, 3),
              "conv6_1_CPM.weight": (512, 128, 1, 1), "conv6_2_CPM.weight": (22, 512, 1, 1),
              "Mconv1_stage2.weight": (128, 150, 7, 7), "Mconv7_stage6.bias": (22,)}  # fmt: skip
    assert {k: tuple(real[k].shape) for k in shapes} == shapes
    assert sum(v.numel() for v in real.values()) == 36_832_324  # 147 MB in fp32, as the real file
    net = cn.openpose_hand.load_hand_net(folder / "hand_pose_model.pth")
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd) and net.conv1_1.out_channels == POSE_WIDTH
    AnnotatorFileError = cn.annotator_files.AnnotatorFileError
    with pytest.raises(AnnotatorFileError, match=r"body_pose_model\.pth: not an OpenPose hand model"):
        cn.openpose_hand.load_hand_net(folder / "body_pose_model.pth")
    with pytest.raises(AnnotatorFileError, match=r"hand_pose_model\.pth: weights do not fit: .*unexpected"):
        cn.openpose_net.load_body_net(folder / "hand_pose_model.pth")  # shares conv1_1 with the body's


def test_hand_boxes_follow_the_forearm(cn: SimpleNamespace) -> None:
    boxes = cn.openpose_hand.boxes
    # right arm hanging down: forearm 30 px, upper arm 40 px -> 1.5 * max(30, 36) = 54 px, centred a
    # third of the forearm below the wrist
    person = arms(cn, {2: (100, 100), 3: (100, 140), 4: (100, 170)})
    assert boxes(person, 300, 300) == [(73, 152, 54, False)]
    both = arms(
        cn, {2: (100, 100), 3: (100, 140), 4: (100, 170), 5: (200, 100), 6: (200, 130), 7: (230, 130)}
    )
    # left arm: forearm 30 px, upper arm 30 px -> 45 px, centred at (239.9, 130); listed first
    assert boxes(both, 300, 300) == [(217, 107, 45, True), (73, 152, 54, False)]
    assert boxes(both, 250, 300)[0] == (217, 107, 32, True)  # clipped at the right edge
    assert boxes(both, 225, 300) == [(73, 152, 54, False)]  # clipped below 20 px: no left box
    assert boxes(arms(cn, {2: (100, 100), 3: (100, 140)}), 300, 300) == []  # no wrist, no box


def test_hand_keypoints_from_their_maps(cn: SimpleNamespace) -> None:
    hand = cn.openpose_hand
    yy, xx = np.mgrid[0:128, 0:128]
    maps = np.zeros((128, 128, 22))
    truth = {k: (10 + 5 * k, 100 - 4 * k) for k in range(21) if k != 7}  # keypoint 7 missing
    for k, (x, y) in truth.items():
        maps[:, :, k] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
    maps[:, :, 3] += 0.6 * np.exp(-((xx - 120) ** 2 + (yy - 10) ** 2) / 8)  # a weaker second blob
    got = hand.hand_peaks(maps, 64)
    assert got[7] is None
    assert all(got[k] == (float(int(x * 64 / 128)), float(int(y * 64 / 128))) for k, (x, y) in truth.items())


def test_hands_are_drawn_in_sd_webui_controlnets_colours(cn: SimpleNamespace) -> None:
    full = [(60.0, 150.0)] + [(20.0 + 30 * f + 8 * j, 110.0 - 22 * j) for f in range(5) for j in range(4)]
    points = [None if i == 13 else p for i, p in enumerate(full)]  # the ring finger's base is missing
    canvas = np.zeros((170, 200, 3), np.uint8)
    cn.openpose_hand.draw_hand(canvas, points)

    def mid(a: int, b: int) -> tuple[int, ...]:
        (ax, ay), (bx, by) = full[a], full[b]
        return tuple(canvas[int((ay + by) / 2), int((ax + bx) / 2)])

    # bone i has hue i / 20 (matplotlib's hsv_to_rgb x 255, as sd-webui-controlnet colours them)
    assert mid(0, 1) == (255, 0, 0)  # bone 0: hue 0
    assert mid(0, 5) == (204, 255, 0)  # bone 4: hue 0.2
    assert mid(10, 11) == (0, 255, 255)  # bone 10: hue 0.5
    assert mid(0, 13) == (0, 0, 0) and mid(13, 14) == (0, 0, 0)  # no bones to the missing keypoint
    assert all(tuple(canvas[int(p[1]), int(p[0])]) == (0, 0, 255) for p in points if p is not None)
    assert not canvas[int(full[13][1]), int(full[13][0])].any()


def test_openpose_hand_end_to_end(cn: SimpleNamespace, models_dir: Path) -> None:
    folder = models_dir / "ControlNet" / "annotators"
    image = drawing((96, 64))
    out = cn.preprocess.run("openpose_hand", image, 64, models_dir=models_dir)
    body_only = cn.preprocess.run("openpose", image, 64, models_dir=models_dir)
    assert np.array_equal(np.asarray(out), np.asarray(body_only))  # the random body net finds nobody
    assert out.info["openpose"] == body_only.info["openpose"]
    # hands for a person given here: one box (the left arm), 21 keypoints in it or absent
    net = cn.openpose_hand.load_hand_net(folder / "hand_pose_model.pth")
    person = arms(cn, {5: (40, 10), 6: (40, 30), 7: (40, 44)})
    bgr = np.ascontiguousarray(np.asarray(drawing((96, 64)))[:, :, ::-1])
    ((x, y, size, is_left),) = cn.openpose_hand.boxes(person, 96, 64)
    found = cn.openpose_hand.hands(net, person, bgr)
    assert list(found) == [True] and is_left and len(found[True]) == 21
    assert all(x <= p[0] < x + size and y <= p[1] < y + size for p in found[True] if p is not None)
    pose = cn.openpose.pose_json([person], 64, 96, [found])
    flat = pose["people"][0]["hand_left_keypoints_2d"]
    assert len(flat) == 63 and pose["people"][0]["hand_right_keypoints_2d"] is None
    assert all(
        flat[3 * i : 3 * i + 3] == ([p[0] / 96, p[1] / 64, 1.0] if p is not None else [0.0, 0.0, 0.0])
        for i, p in enumerate(found[True])
    )
