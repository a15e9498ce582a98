"""openpose_face and openpose_full: CMU's face network loaded strictly from a tiny facenet.pth in the real
key layout (a foreign file refused by name), the face box from a body's nose, eyes and ears, landmarks
from maps built here, the faces drawn as sd-webui-controlnet draws them (with the body and the hands),
their pose JSON, and both preprocessors end to end through the real loader (the random body network finds
nobody, so the hand and face networks also map a person given by hand)."""

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
    return annotator_modules(tmp_path_factory.mktemp("face-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("face-models")
    write_annotators(cn, d)
    return d


def body(cn: SimpleNamespace, points: dict[int, tuple[float, float]]) -> SimpleNamespace:
    kp = tuple((*points[i], 1.0) if i in points else None for i in range(18))
    return cn.openpose_keypoints.Person(kp, 10.0, len(points))


def test_face_model_loads_strictly_in_the_real_layout(cn: SimpleNamespace, models_dir: Path) -> None:
    folder = models_dir / "ControlNet" / "annotators"
    sd = torch.load(folder / "facenet.pth", weights_only=True)
    with torch.device("meta"):
        real = cn.openpose_face.FaceNet(64).state_dict()
    assert real.keys() == sd.keys() and len(sd) == 104  # 52 convs, flat names as in CMU's Caffe model
    shapes = {"conv1_1.weight": (64, 3, 3, 3), "conv4_4.weight": (512, 512, 3, 3),
              "conv5_3_CPM.weight": (128, 512, 3, 3), "conv6_1_CPM.weight": (512, 128, 1, 1),
              "conv6_2_CPM.weight": (71, 512, 1, 1), "Mconv1_stage2.weight": (128, 199, 7, 7),
              "Mconv6_stage6.weight": (128, 128, 1, 1), "Mconv7_stage6.bias": (71,)}  # fmt: skip
    assert {k: tuple(real[k].shape) for k in shapes} == shapes
    params = sum(v.numel() for v in real.values())
    assert params == 38_425_706  # 153.7 MB in fp32: the published facenet.pth is about 154 MB
    net = cn.openpose_face.load_face_net(folder / "facenet.pth")
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd) and not net.training
    assert net.conv1_1.out_channels == POSE_WIDTH
    AnnotatorFileError = cn.annotator_files.AnnotatorFileError
    with pytest.raises(AnnotatorFileError, match=r"hand_pose_model\.pth: not an OpenPose face model \(22"):
        cn.openpose_face.load_face_net(folder / "hand_pose_model.pth")  # the same key names
    with pytest.raises(AnnotatorFileError, match=r"facenet\.pth: not an OpenPose hand model \(71 maps"):
        cn.openpose_hand.load_hand_net(folder / "facenet.pth")
    with pytest.raises(AnnotatorFileError, match=r"body_pose_model\.pth: not an OpenPose face model"):
        cn.openpose_face.load_face_net(folder / "body_pose_model.pth")
    with pytest.raises(AnnotatorFileError, match=r"netG\.pth: not an OpenPose face model"):
        cn.openpose_face.load_face_net(folder / "netG.pth")


def test_a_foreign_or_broken_facenet_is_named_by_the_preprocessor(
    cn: SimpleNamespace, models_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ControlNet" / "annotators"
    folder.mkdir(parents=True)
    source = models_dir / "ControlNet" / "annotators"
    for name in ("body_pose_model.pth", "hand_pose_model.pth"):
        (folder / name).symlink_to(source / name)
    err = cn.preprocess.AnnotatorUnavailable
    with pytest.raises(err, match=r"openpose_face preprocessor needs facenet\.pth in models/ControlNet"):
        cn.preprocess.run("openpose_face", drawing(), 64, models_dir=tmp_path)
    (folder / "facenet.pth").symlink_to(source / "hand_pose_model.pth")
    with pytest.raises(err, match=r"openpose_full preprocessor cannot use facenet\.pth: not an OpenPose"):
        cn.preprocess.run("openpose_full", drawing(), 64, models_dir=tmp_path)
    (folder / "facenet.pth").unlink()
    sd = torch.load(source / "facenet.pth", weights_only=True)
    del sd["Mconv7_stage6.bias"]
    torch.save(sd, folder / "facenet.pth")
    with pytest.raises(err, match=r"facenet\.pth: weights do not fit: missing Mconv7_stage6\.bias"):
        cn.preprocess.run("openpose_face", drawing(), 64, models_dir=tmp_path)


def test_the_face_box_comes_from_the_nose_eyes_and_ears(cn: SimpleNamespace) -> None:
    box = cn.openpose_face.face_box
    # eyes 8 px from the nose (x 3), ears 15 px (x 1.5): half a side is 24
    full = {0: (100, 100), 14: (92, 96), 15: (108, 96), 16: (85, 100), 17: (115, 100)}
    assert box(body(cn, full), 300, 200) == (76, 76, 48, 48)
    assert box(body(cn, {0: (100, 100), 17: (88, 102)}), 300, 200) == (82, 82, 36, 36)  # an ear: 1.5 x 12
    # at the top-left corner the square moves into the image; at the right and bottom edges it is cut
    assert box(body(cn, {0: (10, 15), 14: (18, 11)}), 300, 200) == (0, 0, 48, 48)
    assert box(body(cn, {0: (290, 180), 15: (282, 176)}), 300, 200) == (266, 156, 34, 44)
    assert box(body(cn, {0: (100, 100), 14: (103, 100)}), 300, 200) is None  # 18 px: too small
    assert box(body(cn, {0: (100, 100), 1: (100, 130), 2: (80, 130)}), 300, 200) is None  # no eye, no ear
    assert box(body(cn, {14: (92, 96), 15: (108, 96), 16: (85, 100)}), 300, 200) is None  # no nose


def test_landmarks_are_their_maps_peaks_above_the_threshold(cn: SimpleNamespace) -> None:
    face = cn.openpose_face
    yy, xx = np.mgrid[0:40, 0:50]
    maps = np.zeros((40, 50, 71))
    truth = {k: (k % 50, (7 * k) % 40) for k in range(70) if k not in (7, 69)}
    for k, (x, y) in truth.items():
        maps[:, :, k] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 6)
    maps[:, :, 7] = 0.04 * np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / 6)  # under 0.05 everywhere
    maps[:, :, 12] += 0.7 * np.exp(-((xx - 45) ** 2 + (yy - 35) ** 2) / 6)  # a weaker second blob
    maps[:, :, 70] = 1.0  # the background map is no landmark
    got = face.face_peaks(maps)
    assert len(got) == 70 and got[7] is None and got[69] is None
    assert all(got[k] == (float(x), float(y)) for k, (x, y) in truth.items())


def test_a_persons_face_from_the_network(cn: SimpleNamespace, models_dir: Path) -> None:
    face = cn.openpose_face
    net = face.load_face_net(models_dir / "ControlNet" / "annotators" / "facenet.pth")
    rgb = np.asarray(drawing((96, 64)))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    person = body(cn, {0: (80, 30), 14: (74, 26), 15: (86, 26)})  # a box cut at the right edge
    x, y, w, h = face.face_box(person, 96, 64)
    assert (x, y, w, h) == (62, 12, 34, 36)
    maps = face.face_maps(net, bgr[y : y + h, x : x + w])
    assert maps.shape == (36, 34, 71) and maps.max() > maps.min()
    landmarks = face.face(net, person, bgr)
    want = [None if p is None else (p[0] + x, p[1] + y) for p in face.face_peaks(maps)]
    assert len(landmarks) == 70 and landmarks == want
    assert all(x <= p[0] < x + w and y <= p[1] < y + h for p in landmarks if p is not None)
    assert face.face(net, body(cn, {0: (80, 30)}), bgr) is None  # no eyes or ears: no face
    pose = cn.openpose.pose_json([person, body(cn, {0: (10, 10)})], 64, 96, (), [landmarks, None])
    flat = pose["people"][0]["face_keypoints_2d"]
    assert len(flat) == 210 and pose["people"][1]["face_keypoints_2d"] is None
    assert all(
        flat[3 * i : 3 * i + 3] == ([p[0] / 96, p[1] / 64, 1.0] if p is not None else [0.0, 0.0, 0.0])
        for i, p in enumerate(landmarks)
    )


def test_openpose_full_draws_the_body_then_the_hands_then_the_faces(cn: SimpleNamespace) -> None:
    person = body(cn, {0: (60, 40), 1: (60, 70), 14: (54, 34), 15: (66, 34), 5: (80, 70), 6: (90, 100),
                       7: (95, 130)})  # fmt: skip
    hand = [(100.0, 150.0)] + [(90.0 + 5 * f, 140.0 - 4 * j) for f in range(5) for j in range(4)]
    landmarks = [(40.0 + 2 * (i % 20), 30.0 + 3 * (i // 20)) for i in range(69)] + [None]
    landmarks[5] = (95.0, 130.0)  # on the left wrist's dot: the face is drawn last
    landmarks[6] = hand[3]  # on a hand keypoint
    canvas = cn.openpose.draw([person], 170, 130, [{True: hand}], [landmarks])
    assert tuple(canvas[100, 90]) == cn.openpose.COLOURS[6]  # the left elbow's keypoint
    assert tuple(canvas[int(hand[0][1]), int(hand[0][0])]) == (0, 0, 255)  # a hand keypoint: blue
    for p in landmarks:
        if p is not None:
            assert tuple(canvas[int(p[1]), int(p[0])]) == (255, 255, 255)
    # a dot of radius 3: white 3 px from its centre, not 4 px (nothing else is drawn next to it)
    lone = np.zeros((20, 20, 3), np.uint8)
    cn.openpose_face.draw_face(lone, [(10.0, 10.0), None])
    assert tuple(lone[10, 13]) == (255, 255, 255) and not lone[10, 14].any() and not lone[14, 10].any()
    assert (lone.sum(axis=2) > 0).sum() == 29  # OpenCV's filled circle of radius 3
    without = cn.openpose.draw([person], 170, 130, [{True: hand}])
    assert not np.array_equal(canvas, without)
    assert np.array_equal(without, cn.openpose.draw([person], 170, 130, [{True: hand}], [None]))


@pytest.mark.parametrize("module", ["openpose_face", "openpose_full"])
def test_openpose_face_and_full_end_to_end(cn: SimpleNamespace, models_dir: Path, module: str) -> None:
    image = drawing((96, 64))
    out = cn.preprocess.run(module, image, 64, models_dir=models_dir)
    body_only = cn.preprocess.run("openpose", image, 64, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (96, 64)
    assert np.array_equal(np.asarray(out), np.asarray(body_only))  # the random body net finds nobody
    assert out.info["openpose"] == body_only.info["openpose"]
    names = cn.preprocess.NEEDS_WEIGHTS[module]
    assert names[0] == "body_pose_model.pth" and names[-1] == "facenet.pth"
    assert ("hand_pose_model.pth" in names) == (module == "openpose_full")


def test_openpose_full_maps_a_given_person_through_the_real_loader(
    cn: SimpleNamespace, models_dir: Path
) -> None:
    folder = models_dir / "ControlNet" / "annotators"
    paths = [folder / "hand_pose_model.pth", folder / "facenet.pth"]
    rgb = np.asarray(drawing((96, 64)).convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    person = body(cn, {0: (80, 30), 1: (80, 45), 14: (74, 26), 15: (86, 26), 5: (60, 20), 6: (45, 20),
                       7: (35, 30)})  # fmt: skip
    out = cn.openpose.pose_map([person], rgb, paths, cn.annotator_files.Nets())
    hand = cn.openpose_hand.hands(cn.openpose_hand.load_hand_net(paths[0]), person, bgr)
    landmarks = cn.openpose_face.face(cn.openpose_face.load_face_net(paths[1]), person, bgr)
    assert list(hand) == [True] and landmarks is not None
    found = [p for p in landmarks if p is not None]
    assert found  # the random face net puts some landmarks above the threshold
    want = cn.openpose.draw([person], 64, 96, [hand], [landmarks])
    assert np.array_equal(np.asarray(out), want)
    assert all(tuple(want[int(p[1]), int(p[0])]) == (255, 255, 255) for p in found)
    entry = out.info["openpose"]["people"][0]
    assert len(entry["face_keypoints_2d"]) == 210 and len(entry["hand_left_keypoints_2d"]) == 63
    assert entry["hand_right_keypoints_2d"] is None
    body_only = cn.openpose.pose_map([person], rgb, [], cn.annotator_files.Nets())
    assert body_only.info["openpose"]["people"][0]["face_keypoints_2d"] is None
    assert not np.array_equal(np.asarray(body_only), want)
