"""The openpose preprocessor: OpenPose's body network loaded strictly from a tiny body_pose_model.pth in
the real key layout; people assembled from heat maps and affinity fields built here (random weights find
nobody); the skeleton drawn in sd-webui-controlnet's colours; the pose JSON; and /controlnet/detect with
openpose, openpose_full and lineart_anime through the real server."""

from __future__ import annotations

import base64
import io
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_annotators import POSE_WIDTH, annotator_modules, write_annotators
from tests.test_ext_controlnet import b64, drawing
from tests.test_server_harness import running_server

# A standing person (x, y) in the 18 COCO keypoints' order: nose, neck, right shoulder/elbow/wrist, left
# shoulder/elbow/wrist, right hip/knee/ankle, left hip/knee/ankle, right/left eye, right/left ear.
TEMPLATE = (
    (20, 10), (20, 25), (8, 25), (4, 45), (2, 62), (32, 25), (36, 45), (38, 62), (12, 65), (12, 90),
    (12, 115), (28, 65), (28, 90), (28, 115), (16, 6), (24, 6), (10, 8), (30, 8),
)  # fmt: skip
# sd-webui-controlnet's limbs (1-based keypoints, as its util.py lists them) and its colour per limb /
# keypoint: the reference the module's drawing is checked against.
REF_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
             (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))  # fmt: skip
REF_COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def person_at(dx: float, dy: float, scale: float = 1.0) -> list[tuple[float, float]]:
    return [(x * scale + dx, y * scale + dy) for x, y in TEMPLATE]


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return annotator_modules(tmp_path_factory.mktemp("openpose-ext"))


@pytest.fixture(scope="module")
def models_dir(cn: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openpose-models")
    write_annotators(cn, d)
    return d


def test_body_model_loads_strictly_in_the_real_layout(cn: SimpleNamespace, models_dir: Path) -> None:
    path = models_dir / "ControlNet" / "annotators" / "body_pose_model.pth"
    sd = torch.load(path, weights_only=True)
    assert len(sd) == 184  # 92 convs, flat names as in CMU's Caffe model
    with torch.device("meta"):
        real = cn.openpose_net.BodyPoseNet(64).state_dict()
    assert real.keys() == sd.keys()
    shapes = {"conv1_1.weight": (64, 3, 3, 3), "conv4_4_CPM.weight": (128, 256, 3, 3),
              "conv5_4_CPM_L1.weight": (512, 128, 1, 1), "conv5_5_CPM_L1.weight": (38, 512, 1, 1),
              "conv5_5_CPM_L2.weight": (19, 512, 1, 1), "Mconv1_stage2_L1.weight": (128, 185, 7, 7),
              "Mconv6_stage6_L2.weight": (128, 128, 1, 1), "Mconv7_stage6_L2.bias": (19,)}  # fmt: skip
    assert {k: tuple(real[k].shape) for k in shapes} == shapes
    assert sum(v.numel() for v in real.values()) == 52_311_446  # 209 MB in fp32, as the real file
    net = cn.openpose_net.load_body_net(path)
    got = net.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd) and not net.training
    assert net.conv1_1.out_channels == POSE_WIDTH
    blocks = {f"model{'0' if k.startswith('conv') and '_CPM_L' not in k else _block(k)}.{k}": v
              for k, v in sd.items()}  # fmt: skip
    torch.save(blocks, path.with_name("blocks.pth"))  # as the reference code's module saves it
    assert "model1_1.conv5_1_CPM_L1.weight" in blocks and "model6_2.Mconv7_stage6_L2.bias" in blocks
    again = cn.openpose_net.load_body_net(path.with_name("blocks.pth")).state_dict()
    assert all(torch.equal(again[k], sd[k]) for k in sd)
    heat, paf = cn.openpose_net.body_maps(net, np.asarray(drawing((70, 50))))
    assert heat.shape == (50, 70, 19) and paf.shape == (50, 70, 38)


def _block(key: str) -> str:
    """The reference module's block of a stage conv: conv5_*_CPM_L1 -> 1_1, Mconv3_stage4_L2 -> 4_2."""
    stage = key.split("_stage")[1][0] if "_stage" in key else "1"
    return f"{stage}_{key.split('_L')[1][0]}"


def test_missing_or_foreign_body_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    err = cn.preprocess.AnnotatorUnavailable
    with pytest.raises(err, match=r"body_pose_model\.pth in models/ControlNet/annotators"):
        cn.preprocess.run("openpose", drawing(), models_dir=tmp_path)
    folder = tmp_path / "ControlNet" / "annotators"
    folder.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "body_pose_model.pth")
    with pytest.raises(err, match=r"body_pose_model\.pth: not an OpenPose body model"):
        cn.preprocess.run("openpose", drawing(), models_dir=tmp_path)
    sd = cn.openpose_net.BodyPoseNet(POSE_WIDTH).state_dict()
    del sd["Mconv7_stage6_L2.bias"]
    torch.save(sd, folder / "body_pose_model.pth")
    with pytest.raises(err, match=r"body_pose_model\.pth: weights do not fit.*Mconv7_stage6_L2\.bias"):
        cn.preprocess.run("openpose", drawing(), models_dir=tmp_path)


def synthetic_maps(cn: SimpleNamespace, persons: list[list[tuple[float, float]]], limbs_of: list[int],
                   size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Heat maps with a Gaussian blob at each keypoint and affinity fields holding each limb's unit vector
    within 2 px of it; person i gets its first limbs_of[i] limbs (the parts they join)."""
    w, h = size
    kp = cn.openpose_keypoints
    heat, paf = np.zeros((h, w, 19)), np.zeros((h, w, 38))
    yy, xx = np.mgrid[0:h, 0:w]
    for points, n in zip(persons, limbs_of, strict=True):
        parts = {p for limb in kp.LIMBS[:n] for p in limb}
        for part in parts:
            x, y = points[part]
            heat[:, :, part] = np.maximum(heat[:, :, part], np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5))
        for (a, b), (cx, cy) in list(zip(kp.LIMBS, kp.PAF_CHANNELS, strict=True))[:n]:
            (ax, ay), (bx, by) = points[a], points[b]
            length = math.hypot(bx - ax, by - ay)
            ux, uy = (bx - ax) / length, (by - ay) / length
            t = ((xx - ax) * ux + (yy - ay) * uy) / length
            near = (t >= 0) & (t <= 1) & (np.abs((xx - ax) * uy - (yy - ay) * ux) <= 2)
            paf[near, cx], paf[near, cy] = ux, uy
    return heat, paf


def test_two_people_are_assembled_from_their_maps(cn: SimpleNamespace) -> None:
    a, b = person_at(15, 20), person_at(90, 25)
    partial = person_at(165, 20)  # neck and shoulders only: 3 parts, too few to keep
    heat, paf = synthetic_maps(cn, [a, b, partial], [19, 19, 2], (220, 160))
    found = cn.openpose_keypoints.people(heat, paf)
    assert len(found) == 2
    got = sorted(found, key=lambda p: p.keypoints[0][0])
    for person, truth in zip(got, (a, b), strict=True):
        assert [(x, y) for x, y, _ in person.keypoints] == truth
        assert person.parts == 18 and all(s == pytest.approx(1.0) for *_, s in person.keypoints)
    # without the arms' fields, the arms' parts stay out of each skeleton; the rest is still two people
    no_arms = paf.copy()
    for k in (2, 3, 4, 5):  # elbow and wrist limbs
        no_arms[:, :, list(cn.openpose_keypoints.PAF_CHANNELS[k])] = 0
    found = sorted(cn.openpose_keypoints.people(heat, no_arms), key=lambda p: p.keypoints[0][0])
    assert len(found) == 2 and all(p.parts == 14 for p in found)
    assert all(p.keypoints[i] is None for p in found for i in (3, 4, 6, 7))


def test_the_skeleton_has_sd_webui_controlnets_colours(cn: SimpleNamespace) -> None:
    points = person_at(10, 10, scale=3)
    op = cn.openpose
    person = cn.openpose_keypoints.Person(tuple((x, y, 1.0) for x, y in points), 18.0, 18)
    canvas = op.draw([person], 370, 130)
    assert canvas.shape == (370, 130, 3) and canvas.dtype == np.uint8
    for k, (a, b) in enumerate(REF_LIMBS[:17]):
        (ax, ay), (bx, by) = points[a - 1], points[b - 1]
        mid = canvas[int((ay + by) / 2), int((ax + bx) / 2)]
        assert tuple(mid) == tuple(int(c * 0.6) for c in REF_COLOURS[k]), k  # limbs dimmed to 60 %
    for i, (x, y) in enumerate(points):
        assert tuple(canvas[int(y), int(x)]) == REF_COLOURS[i], i  # keypoints at full colour
    assert not canvas[:, :3].any() and not canvas[-3:].any()  # black around
    # a missing keypoint takes its limbs and its dot away
    gone = cn.openpose_keypoints.Person(
        tuple(None if i == 4 else k for i, k in enumerate(person.keypoints)), 17.0, 17
    )
    canvas = op.draw([gone], 370, 130)
    (ex, ey), (wx, wy) = points[3], points[4]
    assert not canvas[int(wy), int(wx)].any() and not canvas[int((ey + wy) / 2), int((ex + wx) / 2)].any()
    pose = op.pose_json([gone], 370, 130)
    assert pose["canvas_height"] == 370 and pose["canvas_width"] == 130
    (entry,) = pose["people"]
    flat = entry["pose_keypoints_2d"]
    assert len(flat) == 54 and flat[12:15] == [0.0, 0.0, 0.0]
    assert flat[:3] == [points[0][0] / 130, points[0][1] / 370, 1.0]
    assert entry["hand_left_keypoints_2d"] is None and entry["face_keypoints_2d"] is None


def test_the_map_is_the_drawing_of_the_people_the_network_finds(
    cn: SimpleNamespace, models_dir: Path
) -> None:
    image = drawing((96, 64))
    out = cn.preprocess.run("openpose", image, 64, models_dir=models_dir)
    assert out.mode == "RGB" and out.size == (96, 64)
    net = cn.openpose_net.load_body_net(models_dir / "ControlNet" / "annotators" / "body_pose_model.pth")
    found = cn.openpose_keypoints.people(*cn.openpose_net.body_maps(net, np.asarray(image)))
    assert np.array_equal(np.asarray(out), cn.openpose.draw(found, 64, 96))
    assert out.info["openpose"] == cn.openpose.pose_json(found, 64, 96)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    data = tmp_path_factory.mktemp("annotator-data")
    shutil.copytree(models_dir, data / "models")
    tmp = tmp_path_factory.mktemp("annotator-srv")
    with running_server(data, tmp, flags=["--api"]) as srv, srv.client() as client:
        yield client, data / "models" / "ControlNet" / "annotators"


def test_detect_runs_openpose_and_lineart_anime_through_the_server(
    cn: SimpleNamespace, models_dir: Path, server: tuple[httpx.Client, Path]
) -> None:
    client, folder = server
    detail = client.get("/controlnet/module_list").json()["module_detail"]
    for name in ("openpose", "openpose_hand", "openpose_face", "openpose_full", "lineart_anime"):
        assert detail[name]["model_free"] is False
        assert [s["name"] for s in detail[name]["sliders"]] == ["Preprocessor Resolution"]
    image = drawing((96, 64))
    body = {"controlnet_input_images": [b64(image), b64(image.transpose(Image.Transpose.ROTATE_90))],
            "controlnet_processor_res": 64}  # fmt: skip
    r = client.post("/controlnet/detect", json={**body, "controlnet_module": "openpose"})
    assert r.status_code == 200, r.text
    maps = [Image.open(io.BytesIO(base64.b64decode(s))) for s in r.json()["images"]]
    assert [m.size for m in maps] == [(96, 64), (64, 96)]
    local = cn.preprocess.run("openpose", image, 64, models_dir=models_dir)
    assert np.array_equal(np.asarray(maps[0].convert("RGB")), np.asarray(local))
    poses = r.json()["poses"]
    assert len(poses) == 2 and poses[0] == local.info["openpose"]
    assert (poses[1]["canvas_width"], poses[1]["canvas_height"]) == (64, 96)
    r = client.post("/controlnet/detect", json={**body, "controlnet_module": "openpose_full"})
    assert r.status_code == 200, r.text  # body, hand and face networks read (random: nobody found)
    full = cn.preprocess.run("openpose_full", image, 64, models_dir=models_dir)
    assert r.json()["poses"][0] == full.info["openpose"] and len(r.json()["poses"]) == 2
    r = client.post("/controlnet/detect", json={**body, "controlnet_module": "lineart_anime"})
    assert r.status_code == 200 and "poses" not in r.json(), r.text
    got = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    want = cn.preprocess.run("lineart_anime", image, 64, models_dir=models_dir)
    assert got.size == (96, 64) and np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
    assert np.asarray(want).max() > np.asarray(want).min()
    (folder / "netG.pth").rename(folder / "netG.pth.bak")
    r = client.post("/controlnet/detect", json={**body, "controlnet_module": "lineart_anime"})
    assert r.status_code == 422 and r.json()["field"] == "controlnet_module", r.text
    assert "netG.pth in models/ControlNet/annotators" in r.text
