"""Tiny annotator files for the network-backed ControlNet preprocessors, in the real files' key layouts:
`netG.pth` (lineart_anime's U-Net), `body_pose_model.pth`, `hand_pose_model.pth` and `facenet.pth`
(OpenPose's body, hand and face networks), narrower than the real ones (the key names and the layer
structure are the real ones; the width is read from the weights), random weights, saved as plain
state-dict pickles like the originals."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import torch

from tests.fixtures_controlnet import extension_modules
from webui.core.models.tiny import _randomize

ANIME_WIDTH = 2  # the real netG.pth: 64
POSE_WIDTH = 2  # the real body_pose_model.pth, hand_pose_model.pth and facenet.pth: 64


def annotator_modules(data_dir: Path) -> SimpleNamespace:
    """The controlnet extension's modules (as the plugin host imports them) with the annotators'."""
    mods = extension_modules(data_dir)
    pkg = mods.models.__package__
    names = (
        "annotator_files",
        "lineart_anime",
        "openpose",
        "openpose_net",
        "openpose_keypoints",
        "openpose_hand",
        "openpose_face",
        "openpose_cpm",
    )
    for name in names:
        setattr(mods, name, importlib.import_module(f"{pkg}.{name}"))
    return mods


def write_annotators(mods: SimpleNamespace, models_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """netG.pth, body_pose_model.pth, hand_pose_model.pth and facenet.pth in
    models_dir/ControlNet/annotators; their state dicts by name."""
    folder = models_dir / "ControlNet" / "annotators"
    folder.mkdir(parents=True, exist_ok=True)
    nets = {
        "netG.pth": mods.lineart_anime.UnetGenerator(ANIME_WIDTH),
        "body_pose_model.pth": mods.openpose_net.BodyPoseNet(POSE_WIDTH),
        "hand_pose_model.pth": mods.openpose_hand.HandPoseNet(POSE_WIDTH),
        "facenet.pth": mods.openpose_face.FaceNet(POSE_WIDTH),
    }
    out = {}
    for seed, (name, net) in enumerate(nets.items(), start=5):
        _randomize(net, torch.Generator().manual_seed(seed))
        sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
        torch.save(sd, folder / name)
        out[name] = sd
    return out
