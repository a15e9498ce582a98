"""Tiny annotator files for the network-backed ControlNet preprocessors, in the real files' key layouts:
`netG.pth` (lineart_anime's U-Net), `body_pose_model.pth`, `hand_pose_model.pth` and `facenet.pth`
(OpenPose's body, hand and face networks), `ControlNetHED.pth` (HED's soft edges), `table5_pidinet.pth`
(PiDiNet's), narrower than the real ones (the key names and the layer structure are the real ones; the
width is read from the weights), and `mlsd_large_512_fp32.pth` (M-LSD's lines, full size); random
weights, saved as plain
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
HED_WIDTH = 2  # the real ControlNetHED.pth: 64
PIDI_WIDTH, PIDI_DILATION = 4, 4  # the real table5_pidinet.pth: 60 and 24


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
        "edge_maps",
        "hed",
        "pidinet",
        "mlsd",
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


def write_hed(mods: SimpleNamespace, folder: Path, seed: int = 11) -> dict[str, torch.Tensor]:
    """ControlNetHED.pth in `folder` (a narrow HED network in the real key layout, saved in fp16 as the
    published file is); its state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    net = mods.hed.HEDNet(HED_WIDTH)
    _randomize(net, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        net.norm.copy_(torch.tensor([120.0, 115.0, 105.0]).view(1, 3, 1, 1))  # about the real offsets
        net.block1.convs[0].weight.div_(64.0)  # the input is in 0..255: keep the sides out of saturation
    sd = {k: v.detach().clone().half() for k, v in net.state_dict().items()}
    torch.save(sd, folder / "ControlNetHED.pth")
    return sd


def write_pidinet(mods: SimpleNamespace, folder: Path, seed: int = 13) -> dict[str, torch.Tensor]:
    """table5_pidinet.pth in `folder` as the published file is: a training checkpoint's `state_dict`
    with DataParallel's "module." prefix, every pixel-difference kernel 3x3 (not yet converted); the
    state dict as saved."""
    folder.mkdir(parents=True, exist_ok=True)
    net = mods.pidinet.PiDiNet(PIDI_WIDTH, PIDI_DILATION)
    _randomize(net, torch.Generator().manual_seed(seed))
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for key in mods.pidinet.pdc_layers():
        out_ch, in_ch = sd[key].shape[:2]
        sd[key] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) / 3.0
    saved = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"epoch": 7, "state_dict": saved}, folder / "table5_pidinet.pth")
    return saved


def write_mlsd(mods: SimpleNamespace, folder: Path, seed: int = 17) -> dict[str, torch.Tensor]:
    """mlsd_large_512_fp32.pth in `folder`: the real M-LSD layout and size (1.55M values), random
    weights; its state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    net = mods.mlsd.MLSD()
    _randomize(net, torch.Generator().manual_seed(seed))
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(sd, folder / "mlsd_large_512_fp32.pth")
    return sd
