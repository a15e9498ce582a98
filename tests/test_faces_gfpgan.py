"""GFPGAN without spandrel: webui.core.faces.gfpgan_arch's network has the released GFPGANv1.3/1.4 files'
keys and sizes (checked on the meta device, nothing allocated), reads its sizes back from any file of
that layout, loads a tiny file (tests/fixtures_faces.py) strictly, and restores the astronaut's face
and nothing far from it. Files that do not fit are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_faces import TINY_GFPGAN, tiny_gfpgan, write_tiny_gfpgan
from webui.core.faces import align, restorers
from webui.core.faces.gfpgan_arch import GFPGANConfig, GFPGANv1Clean, build
from webui.core.types import RequestError

KNOWN_FACE = (177, 66, 272, 161)  # OpenCV 4's frontal cascade on the astronaut: x=177, y=66, 95x95

# A sample of GFPGANv1.4.pth's (params_ema) names and shapes, one of each kind of key.
RELEASED_SHAPES = {
    "conv_body_first.weight": (32, 3, 1, 1),
    "conv_body_down.0.conv1.weight": (32, 32, 3, 3),
    "conv_body_down.0.conv2.weight": (64, 32, 3, 3),
    "conv_body_down.0.skip.weight": (64, 32, 1, 1),
    "conv_body_down.6.conv2.bias": (256,),
    "final_conv.weight": (256, 256, 3, 3),
    "final_linear.weight": (8192, 4096),
    "conv_body_up.0.conv2.weight": (256, 256, 3, 3),
    "conv_body_up.6.skip.weight": (32, 64, 1, 1),
    "condition_scale.0.0.weight": (256, 256, 3, 3),
    "condition_scale.6.2.weight": (32, 32, 3, 3),
    "condition_shift.3.2.bias": (256,),  # 64 px: 256 * 2 * 0.5
    "condition_shift.4.2.bias": (128,),
    "toRGB.6.weight": (3, 32, 1, 1),
    "stylegan_decoder.style_mlp.1.weight": (512, 512),
    "stylegan_decoder.style_mlp.15.bias": (512,),
    "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
    "stylegan_decoder.style_conv1.weight": (1,),
    "stylegan_decoder.style_conv1.bias": (1, 512, 1, 1),
    "stylegan_decoder.style_conv1.modulated_conv.weight": (1, 512, 512, 3, 3),
    "stylegan_decoder.style_conv1.modulated_conv.modulation.weight": (512, 512),
    "stylegan_decoder.to_rgb1.modulated_conv.weight": (1, 3, 512, 1, 1),
    "stylegan_decoder.to_rgb1.bias": (1, 3, 1, 1),
    "stylegan_decoder.style_convs.6.modulated_conv.weight": (1, 512, 512, 3, 3),
    "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),
    "stylegan_decoder.to_rgbs.6.modulated_conv.modulation.bias": (64,),
    "stylegan_decoder.noises.noise0": (1, 1, 4, 4),
    "stylegan_decoder.noises.noise14": (1, 1, 512, 512),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gfpgan-models")
    write_tiny_gfpgan(root / "GFPGAN" / "GFPGANv1.4.pth")
    return root


def test_the_512_network_has_the_released_files_keys_and_sizes() -> None:
    with torch.device("meta"):
        net = GFPGANv1Clean()  # GFPGANv1.3/1.4: 512 px, channel multiplier 2, SFT on half, one w per layer
    state = net.state_dict()
    assert len(state) == 285
    assert sum(v.numel() for v in state.values()) == 87_143_276
    assert sum(p.numel() for p in net.parameters()) == 86_444_252  # the rest: 15 stored noise maps
    for name, shape in RELEASED_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    assert GFPGANConfig.from_state_dict(state) == GFPGANConfig()


@pytest.mark.parametrize(
    "config",
    [
        TINY_GFPGAN,
        GFPGANConfig(out_size=64, num_style_feat=16, channel_multiplier=1, narrow=1 / 16, num_mlp=1),
        GFPGANConfig(
            out_size=32, num_style_feat=8, narrow=1 / 64, num_mlp=3, sft_half=False, different_w=False
        ),
    ],
)
def test_the_sizes_are_read_back_from_the_tensors(config: GFPGANConfig) -> None:
    with torch.device("meta"):
        state = GFPGANv1Clean(config).state_dict()
    assert GFPGANConfig.from_state_dict(state) == config


def test_the_tiny_file_restores_the_face_and_nothing_far_from_it(
    models: Path, astronaut: Image.Image
) -> None:
    faces = restorers.FaceRestorers(models)
    assert list(faces.installed()) == ["GFPGAN"]
    net = faces.check("GFPGAN", "restore_faces")
    assert faces.net("GFPGAN", "restore_faces") is net  # loaded once
    out = np.asarray(restorers.restore(astronaut, net))
    src = np.asarray(astronaut)
    changed = np.any(out != src, axis=2)
    x1, y1, x2, y2 = KNOWN_FACE
    assert changed[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20].mean() > 0.9
    margin = 110
    far = np.ones_like(changed)
    far[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = False
    assert not changed[far].any()
    again = np.asarray(restorers.restore(astronaut, net))
    assert np.array_equal(out, again)  # the stored noise: the same face twice


def test_the_loaded_network_is_the_saved_one(models: Path, astronaut: Image.Image) -> None:
    """The file's weights drive the output: the crop through the loaded net equals the crop through the
    same architecture given the same tensors directly, and a network of other weights differs."""
    net = restorers.load_gfpgan(models / "GFPGAN" / "GFPGANv1.4.pth")
    crop = align.crop(np.asarray(astronaut), align.detect_faces(astronaut)[0])
    direct = GFPGANv1Clean(TINY_GFPGAN).eval()
    direct.load_state_dict(tiny_gfpgan(0))
    expected = restorers.gfpgan_net(direct)(crop, 0.5)
    assert np.array_equal(net(crop, 0.5), expected)
    other = GFPGANv1Clean(TINY_GFPGAN).eval()
    other.load_state_dict(tiny_gfpgan(1))
    assert not np.array_equal(restorers.gfpgan_net(other)(crop, 0.5), expected)


def _refused(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "GFPGANv1.4.pth") -> RequestError:
    (tmp_path / "GFPGAN").mkdir(exist_ok=True)
    torch.save(state, tmp_path / "GFPGAN" / name)
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(tmp_path).check("GFPGAN", "gfpgan_visibility")
    assert e.value.field == "gfpgan_visibility" and name in e.value.message, e.value.message
    assert "spandrel package" not in e.value.message
    return e.value


def test_a_missing_key_is_refused_naming_the_file_and_the_key(tmp_path: Path) -> None:
    state = tiny_gfpgan()
    del state["stylegan_decoder.to_rgbs.1.bias"]
    assert "stylegan_decoder.to_rgbs.1.bias" in _refused(tmp_path, state).message


def test_an_extra_key_is_refused(tmp_path: Path) -> None:
    state = {**tiny_gfpgan(), "stylegan_decoder.style_convs.99.bias": torch.zeros(1)}
    assert "style_convs.99" in _refused(tmp_path, state).message


def test_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = tiny_gfpgan()
    state["toRGB.0.weight"] = torch.zeros(3, 5, 1, 1)
    assert "toRGB.0.weight" in _refused(tmp_path, state).message


def test_a_file_of_another_network_is_refused(tmp_path: Path) -> None:
    conv = torch.nn.Conv2d(3, 3, 3)
    message = _refused(tmp_path, dict(conv.state_dict()), "GFPGANv1.3.pth").message
    assert "not a GFPGAN" in message


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    (tmp_path / "GFPGAN").mkdir()
    torch.save({"params_ema": tiny_gfpgan(), "opt": Path("x")}, tmp_path / "GFPGAN" / "GFPGANv1.4.pth")
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(tmp_path).check("GFPGAN", "restore_faces")
    assert "GFPGANv1.4.pth" in e.value.message and "refused" in e.value.message


def test_a_replaced_file_is_loaded_again(tmp_path: Path, astronaut: Image.Image) -> None:
    path = write_tiny_gfpgan(tmp_path / "GFPGAN" / "GFPGANv1.4.pth", seed=0)
    faces = restorers.FaceRestorers(tmp_path)
    first = faces.check("GFPGAN", "restore_faces")
    torch.save({"params_ema": tiny_gfpgan(3)}, path)
    second = faces.check("GFPGAN", "restore_faces")
    assert second is not first
    crop = align.crop(np.asarray(astronaut), align.detect_faces(astronaut)[0])
    assert not np.array_equal(first(crop, 0.5), second(crop, 0.5))


def test_build_gives_a_float_network_from_half_tensors() -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in tiny_gfpgan().items()}
    net = build(state).float()
    x = torch.zeros(1, 3, 128, 128)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (1, 3, 128, 128) and torch.isfinite(y).all()


def test_restoreformer_still_needs_spandrel(tmp_path: Path) -> None:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("spandrel imports here: test_faces_spandrel.py covers those files")
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / "RestoreFormer.pth").write_bytes(b"x")
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(tmp_path).check("RestoreFormer", "face_restoration_model")
    assert "spandrel" in e.value.message and "RestoreFormer.pth" in e.value.message


def test_asking_for_a_restorer_that_cannot_run_names_the_one_that_can(models: Path) -> None:
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(models).check("CodeFormer", "restore_faces")  # A1111's default
    assert "models/Codeformer" in e.value.message and "GFPGAN can run here" in e.value.message
