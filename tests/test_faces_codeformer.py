"""CodeFormer without spandrel: webui.core.faces.codeformer_arch's network has the released codeformer.pth's
keys and sizes (checked on the meta device, nothing allocated), reads its widths back from any file of
that layout, loads the tiny file of tests/fixtures_faces.py strictly, and restores the astronaut's face
and nothing outside the pasted crop; the fidelity weight w changes the result. Files that do not fit are
refused naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_faces import TINY_CODEFORMER, tiny_codeformer, tiny_gfpgan
from webui.core.faces import align, restorers
from webui.core.faces.codeformer_arch import CodeFormer, CodeFormerConfig, adain, build
from webui.core.types import RequestError

# The released codeformer.pth holds 94,112,707 values: spandrel records its loaded model as 376,450,828
# bytes of float32 parameters (tests/__snapshots__/test_CodeFormer.ambr), and the network has no buffers.
RELEASED_VALUES = 94_112_707
# Names and shapes that follow from the released network's hyperparameters (nf 64, channel multipliers
# 1, 2, 2, 4, 4, 8, codebook 1024 x 256, transformer 9 x 512 wide with a 1024 MLP, 256 tokens, fuse
# blocks at 32, 64, 128, 256 px), one of each kind of key.
RELEASED_SHAPES = {
    "encoder.blocks.0.weight": (64, 3, 3, 3),
    "encoder.blocks.1.norm1.weight": (64,),
    "encoder.blocks.3.conv.weight": (64, 64, 3, 3),  # the first Downsample
    "encoder.blocks.4.conv_out.weight": (128, 64, 1, 1),
    "encoder.blocks.16.conv_out.weight": (512, 256, 1, 1),
    "encoder.blocks.17.q.weight": (512, 512, 1, 1),  # attention at 16 px
    "encoder.blocks.21.proj_out.bias": (512,),
    "encoder.blocks.23.weight": (512,),  # the last GroupNorm
    "encoder.blocks.24.weight": (256, 512, 3, 3),
    "quantize.embedding.weight": (1024, 256),
    "generator.blocks.0.weight": (512, 256, 3, 3),
    "generator.blocks.7.k.weight": (512, 512, 1, 1),
    "generator.blocks.8.conv.weight": (512, 512, 3, 3),  # the first Upsample
    "generator.blocks.9.conv_out.weight": (256, 512, 1, 1),
    "generator.blocks.21.conv1.weight": (64, 128, 3, 3),
    "generator.blocks.24.weight": (3, 64, 3, 3),
    "position_emb": (256, 512),
    "feat_emb.weight": (512, 256),
    "ft_layers.0.self_attn.in_proj_weight": (1536, 512),
    "ft_layers.8.self_attn.out_proj.weight": (512, 512),
    "ft_layers.8.linear1.weight": (1024, 512),
    "ft_layers.4.norm2.bias": (512,),
    "idx_pred_layer.0.weight": (512,),
    "idx_pred_layer.1.weight": (1024, 512),
    "fuse_convs_dict.32.encode_enc.conv_out.weight": (256, 512, 1, 1),
    "fuse_convs_dict.256.encode_enc.conv1.weight": (128, 256, 3, 3),
    "fuse_convs_dict.64.scale.0.weight": (256, 256, 3, 3),
    "fuse_convs_dict.128.shift.2.bias": (128,),
}
FILE = "codeformer-v0.1.0.pth"


def test_the_512_network_has_the_released_files_keys_and_sizes() -> None:
    with torch.device("meta"):
        net = CodeFormer()
    state = net.state_dict()
    assert sum(v.numel() for v in state.values()) == RELEASED_VALUES
    assert sum(p.numel() for p in net.parameters()) == RELEASED_VALUES
    for name, shape in RELEASED_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    assert not any(k.startswith(("fuse_convs_dict.16.", "fuse_convs_dict.512.")) for k in state)
    assert "ft_layers.9.norm1.weight" not in state and "encoder.blocks.25.weight" not in state
    assert CodeFormerConfig.from_state_dict(state) == CodeFormerConfig()


@pytest.mark.parametrize(
    "config",
    [
        TINY_CODEFORMER,
        CodeFormerConfig(nf=32, emb_dim=4, codebook_size=7, dim_embd=8, n_layers=1, dim_mlp=5),
        CodeFormerConfig(nf=8, n_layers=3, dim_embd=24, dim_mlp=48, connect_list=("16", "512")),
    ],
)
def test_the_widths_are_read_back_from_the_tensors(config: CodeFormerConfig) -> None:
    with torch.device("meta"):
        state = CodeFormer(config).state_dict()
    assert CodeFormerConfig.from_state_dict(state) == config


def test_the_tiny_file_loads_strictly_and_its_weights_drive_the_output(
    tiny_face_models: Path, astronaut: Image.Image
) -> None:
    """Loaded by the app (no spandrel needed: `problem` says it is missing), the network's output on the
    face crop equals that of the architecture given the same tensors with a strict load; other
    weights give another face."""
    faces = restorers.FaceRestorers(tiny_face_models, problem=lambda: "spandrel cannot be imported")
    assert faces.installed()["CodeFormer"].name == FILE
    net = faces.check("CodeFormer", "restore_faces")
    assert faces.net("CodeFormer", "codeformer_visibility") is net  # loaded once
    crop = align.crop(np.asarray(astronaut), align.detect_faces(astronaut)[0])
    direct = CodeFormer(TINY_CODEFORMER).eval()
    direct.load_state_dict(tiny_codeformer(0), strict=True)
    expected = restorers.codeformer_net(direct)(crop, 0.5)
    out = net(crop, 0.5)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert np.array_equal(out, expected)
    other = CodeFormer(TINY_CODEFORMER).eval()
    other.load_state_dict(tiny_codeformer(1), strict=True)
    assert not np.array_equal(restorers.codeformer_net(other)(crop, 0.5), expected)


def _pasted_box(face: align.Face, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The image-pixel box the 512 crop is warped back into (its corners through the inverse
    alignment), one pixel wider on each side for the bilinear warp."""
    inverse = cv2.invertAffineTransform(face.affine)
    corners = np.array([[0, 0, 1], [512, 0, 1], [0, 512, 1], [512, 512, 1]], dtype=np.float64) @ inverse.T
    x1, y1 = np.floor(corners.min(axis=0)).astype(int) - 1
    x2, y2 = np.ceil(corners.max(axis=0)).astype(int) + 1
    return max(0, x1), max(0, y1), min(shape[1], x2), min(shape[0], y2)


def test_restoring_the_astronaut_changes_only_the_pasted_face_box(
    tiny_face_models: Path, astronaut: Image.Image
) -> None:
    net = restorers.FaceRestorers(tiny_face_models).net("CodeFormer", "restore_faces")
    src = np.asarray(astronaut)
    out = np.asarray(restorers.restore(astronaut, net, weight=0.5))
    changed = np.any(out != src, axis=2)
    [face] = align.detect_faces(astronaut)
    fx1, fy1, fx2, fy2 = face.box
    assert changed[fy1 + 20 : fy2 - 20, fx1 + 20 : fx2 - 20].mean() > 0.9  # the face itself is redone
    x1, y1, x2, y2 = _pasted_box(face, src.shape)
    outside = np.ones_like(changed)
    outside[y1:y2, x1:x2] = False
    assert outside.sum() > 0.5 * outside.size  # the box is a part of the photo...
    assert not changed[outside].any()  # ...and nothing outside it moved


def test_the_fidelity_weight_changes_the_face(tiny_face_models: Path, astronaut: Image.Image) -> None:
    """w = 0 skips the fuse blocks (the codebook's face); w = 1 adds the encoder's features."""
    net = restorers.FaceRestorers(tiny_face_models).net("CodeFormer", "restore_faces")
    w0 = np.asarray(restorers.restore(astronaut, net, weight=0.0))
    w1 = np.asarray(restorers.restore(astronaut, net, weight=1.0))
    differs = np.any(w0 != w1, axis=2)
    x1, y1, x2, y2 = align.detect_faces(astronaut)[0].box
    assert differs[y1:y2, x1:x2].mean() > 0.5, differs[y1:y2, x1:x2].mean()


def test_adain_gives_the_content_the_styles_mean_and_spread() -> None:
    torch.manual_seed(0)
    content, style = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 3 + 5
    out = adain(content, style)
    assert torch.allclose(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.flatten(2).std(dim=2), style.flatten(2).std(dim=2), atol=1e-3)


def _refused(tmp_path: Path, state: dict[str, torch.Tensor], name: str = FILE) -> str:
    (tmp_path / "Codeformer").mkdir(exist_ok=True)
    torch.save({"params_ema": state}, tmp_path / "Codeformer" / name)
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(tmp_path).check("CodeFormer", "codeformer_visibility")
    assert e.value.field == "codeformer_visibility" and name in e.value.message, e.value.message
    assert "spandrel package" not in e.value.message
    return e.value.message


def test_a_gfpgan_file_in_the_codeformer_folder_is_refused_naming_it(tmp_path: Path) -> None:
    message = _refused(tmp_path, tiny_gfpgan(), "codeformer.pth")
    assert "not a CodeFormer network" in message and "position_emb" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.pop("fuse_convs_dict.64.shift.2.bias"), "fuse_convs_dict.64.shift.2.bias"),
        (lambda s: s.update({"generator.blocks.25.weight": torch.zeros(3)}), "generator.blocks.25"),
        (
            lambda s: s.update({"encoder.blocks.4.conv_out.weight": torch.zeros(8, 5, 1, 1)}),
            "blocks.4.conv_out",
        ),
        (lambda s: s.update({"position_emb": torch.zeros(64, 16)}), "position_emb has 64 rows"),
    ],
)
def test_a_file_that_does_not_fit_is_refused_naming_it_and_what_is_wrong(
    tmp_path: Path, change: object, named: str
) -> None:
    state = tiny_codeformer()
    change(state)  # type: ignore[operator]
    assert named in _refused(tmp_path, state)


def test_build_gives_a_float_network_from_half_tensors() -> None:
    state = {k: v.half() for k, v in tiny_codeformer().items()}
    net = build(state).float()
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    assert CodeFormerConfig.from_state_dict(state) == TINY_CODEFORMER
