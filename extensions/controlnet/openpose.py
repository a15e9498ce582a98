"""The openpose preprocessor: the body network's maps (openpose_net.py) -> people (openpose_keypoints.py)
-> the coloured 18-keypoint skeletons on black that the OpenPose ControlNets were trained on, drawn as
sd-webui-controlnet draws them: each of the 17 drawn limbs a filled ellipse 4 px thick in its own colour,
the limbs then dimmed to 60%, each keypoint a filled circle of radius 4 in its own full colour. (With
several people all limbs are drawn, then dimmed once, then all keypoints: sd-webui-controlnet dims the
people drawn before each new one again, a side effect that is not kept.)

The keypoints also go out as sd-webui-controlnet's pose JSON (OpenPose's output format with coordinates
divided by the canvas size), in the map's `info["openpose"]`; /controlnet/detect returns them as `poses`.
openpose_hand adds each person's hands (openpose_hand.py) after all bodies, openpose_face each person's
face (openpose_face.py: 70 landmarks, white dots) after those, openpose_full both; their keypoints fill
the pose JSON's `hand_left_keypoints_2d`, `hand_right_keypoints_2d` and `face_keypoints_2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .annotator_files import Nets
from .openpose_face import FacePoint, draw_face, face, face_net_from
from .openpose_hand import HandPoint, draw_hand, hand_net_from, hands
from .openpose_keypoints import LIMBS, Person, people
from .openpose_net import body_maps, body_net_from

BODY_FILE, HAND_FILE, FACE_FILE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
FILES = {
    "openpose": (BODY_FILE,),
    "openpose_hand": (BODY_FILE, HAND_FILE),
    "openpose_face": (BODY_FILE, FACE_FILE),
    "openpose_full": (BODY_FILE, HAND_FILE, FACE_FILE),
}
INFO_KEY = "openpose"  # the map's info entry holding the pose JSON
STICK_WIDTH, JOINT_RADIUS, LIMB_DIM = 4, 4, 0.6
DRAWN_LIMBS = 17
COLOURS = (  # RGB, limb k and keypoint k share colour k
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


Hands = dict[bool, list[HandPoint | None]]  # is_left: 21 keypoints
Face = list[FacePoint | None] | None  # 70 landmarks; None: no face box


def draw(
    persons: list[Person],
    height: int,
    width: int,
    person_hands: Sequence[Hands] = (),
    person_faces: Sequence[Face] = (),
) -> np.ndarray:
    """The skeletons (then the hands and the faces, if given: one entry per person) on a black RGB canvas
    (uint8, height x width x 3)."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for person in persons:
        for (a, b), colour in zip(LIMBS[:DRAWN_LIMBS], COLOURS, strict=False):
            pa, pb = person.keypoints[a], person.keypoints[b]
            if pa is None or pb is None:
                continue
            centre = (int((pa[0] + pb[0]) / 2), int((pa[1] + pb[1]) / 2))
            length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
            angle = int(math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0])))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), angle, 0, 360, 1)
            cv2.fillConvexPoly(canvas, np.asarray(polygon), colour)
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for person in persons:
        for point, colour in zip(person.keypoints, COLOURS, strict=True):
            if point is not None:
                cv2.circle(canvas, (int(point[0]), int(point[1])), JOINT_RADIUS, colour, thickness=-1)
    for found in person_hands:
        for points in found.values():
            draw_hand(canvas, points)
    for landmarks in person_faces:
        if landmarks is not None:
            draw_face(canvas, landmarks)
    return canvas


def pose_json(
    persons: list[Person],
    height: int,
    width: int,
    person_hands: Sequence[Hands] = (),
    person_faces: Sequence[Face] = (),
) -> dict[str, Any]:
    """sd-webui-controlnet's pose dict: per person `pose_keypoints_2d` as [x / width, y / height, 1.0]
    per keypoint ([0, 0, 0] when missing), the hands and the face likewise when found (else null)."""

    def flat(points: Sequence[Sequence[float] | None] | None) -> list[float] | None:
        if points is None:
            return None
        return [
            v
            for p in points
            for v in ((p[0] / width, p[1] / height, 1.0) if p is not None else (0.0, 0.0, 0.0))
        ]

    found = list(person_hands) or [{} for _ in persons]
    faces: list[Face] = list(person_faces) or [None for _ in persons]
    return {
        "people": [
            {
                "pose_keypoints_2d": flat(person.keypoints),
                "face_keypoints_2d": flat(landmarks),
                "hand_left_keypoints_2d": flat(hand.get(True)),
                "hand_right_keypoints_2d": flat(hand.get(False)),
            }
            for person, hand, landmarks in zip(persons, found, faces, strict=True)
        ],
        "canvas_height": height,
        "canvas_width": width,
    }


def run(paths: Sequence[Path], rgb: np.ndarray, nets: Nets | None = None) -> Image.Image:
    """The pose map of `rgb` (the image already scaled to the preprocessor resolution) from the body
    network in paths[0] (and the hand and face networks, if `paths` holds HAND_FILE or FACE_FILE), its
    pose JSON in `info[INFO_KEY]`; the networks from `nets` (default: read now, on the CPU)."""
    nets = nets or Nets()
    body = paths[0]
    with nets.use(body, lambda sd: body_net_from(sd, body)) as body_net:
        heat, paf = body_maps(body_net, rgb, nets.run_device)
    return pose_map(people(heat, paf), rgb, paths[1:], nets)


def pose_map(persons: list[Person], rgb: np.ndarray, paths: Sequence[Path], nets: Nets) -> Image.Image:
    """The pose map of `persons` found in `rgb`, with their hands and faces from the networks in `paths`
    (HAND_FILE, FACE_FILE: those given), its pose JSON in `info[INFO_KEY]`."""
    h, w = rgb.shape[:2]
    named, device = {p.name: p for p in paths}, nets.run_device
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    found: list[Hands] = []
    if (hand := named.get(HAND_FILE)) is not None:
        with nets.use(hand, lambda sd: hand_net_from(sd, hand)) as hand_net:
            found = [hands(hand_net, person, bgr, device) for person in persons]
    faces: list[Face] = []
    if (face_file := named.get(FACE_FILE)) is not None:
        with nets.use(face_file, lambda sd: face_net_from(sd, face_file)) as face_net:
            faces = [face(face_net, person, bgr, device) for person in persons]
    image = Image.fromarray(draw(persons, h, w, found, faces))
    image.info[INFO_KEY] = pose_json(persons, h, w, found, faces)
    return image
