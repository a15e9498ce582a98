"""The depth_midas and normal_midas preprocessors: a tiny dpt_hybrid-midas-501f0c75.pt in the original
layout (written from the original network's key list), converted and loaded strictly into transformers'
DPT-Hybrid; the depth and normal maps, the background threshold, and clear errors naming the file."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.fixtures_controlnet import extension_modules
from tests.fixtures_depth import MIDAS_SIZES, midas_shapes, write_depth_anything, write_midas
from tests.test_ext_controlnet import b64, drawing
from webui.core.types import RequestError

FILE = "dpt_hybrid-midas-501f0c75.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("midas-data")
    write_midas(d / "models" / "ControlNet" / "annotators")
    return d


@pytest.fixture(scope="module")
def cn(data: Path) -> SimpleNamespace:
    mods = extension_modules(data)
    mods.midas = importlib.import_module(f"{mods.models.__package__}.midas")
    return mods


@pytest.fixture(scope="module")
def model(cn: SimpleNamespace, data: Path) -> torch.nn.Module:
    return cn.midas.load_model(data / "models" / "ControlNet" / "annotators" / FILE)


def test_the_real_layout_converts_key_for_key(cn: SimpleNamespace) -> None:
    sd = {k: torch.empty(s, device="meta") for k, s in midas_shapes("real").items()}
    config = cn.midas.config_from(sd, FILE)
    with torch.device("meta"):
        net = cn.midas.DPTForDepthEstimation(config)
    net.load_state_dict(cn.midas.to_transformers(sd), strict=True, assign=True)
    assert config.num_attention_heads == 12 and list(config.backbone_out_indices[2:]) == [8, 11]
    assert config.backbone_config.depths == [3, 4, 9] and config.neck_hidden_sizes == [256, 512, 768, 768]
    assert 122e6 < sum(p.numel() for p in net.parameters()) < 124e6  # DPT-Hybrid: 123M published


def test_the_tiny_file_loads_every_key(cn: SimpleNamespace, data: Path, model: torch.nn.Module) -> None:
    sd = torch.load(data / "models" / "ControlNet" / "annotators" / FILE, weights_only=True)
    got = model.state_dict()
    blocks = MIDAS_SIZES["tiny"][1]
    assert len(got) == len(sd) - 2 + 4 * blocks  # the classifier dropped; qkv split in three
    stage = "pretrained.model.patch_embed.backbone.stages.1.blocks.1.conv2.weight"
    assert torch.equal(got["dpt.embeddings.backbone.bit.encoder.stages.1.layers.1.conv2.weight"], sd[stage])
    assert torch.equal(
        got["neck.fusion_stage.layers.3.residual_layer2.convolution1.weight"],
        sd["scratch.refinenet1.resConfUnit2.conv1.weight"],
    )
    assert torch.equal(
        got["neck.reassemble_stage.layers.3.resize.weight"], sd["pretrained.act_postprocess4.4.weight"]
    )
    assert not model.training


def test_the_first_vit_block_computes_what_timms_block_does(
    cn: SimpleNamespace, data: Path, model: torch.nn.Module
) -> None:
    sd = torch.load(data / "models" / "ControlNet" / "annotators" / FILE, weights_only=True)
    p, width = "pretrained.model.blocks.0.", MIDAS_SIZES["tiny"][0]
    x = torch.randn(1, 10, width, generator=torch.Generator().manual_seed(1))

    def ln(t: torch.Tensor, n: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(t, (width,), sd[p + n + ".weight"], sd[p + n + ".bias"], 1e-6)

    q, k, v = (
        (ln(x, "norm1") @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"])
        .reshape(1, 10, 3, width // 64, 64)
        .permute(2, 0, 3, 1, 4)
    )
    att = (torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v).transpose(1, 2).reshape(1, 10, width)
    y = x + att @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    h = torch.nn.functional.gelu(ln(y, "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
    want = y + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    with torch.no_grad():
        got = model.dpt.encoder.layer[0](x)
    assert torch.allclose(got[0] if isinstance(got, tuple) else got, want, atol=1e-5)


def test_any_multiple_of_64_runs_and_a_square_matches_transformers_forward(
    cn: SimpleNamespace, model: torch.nn.Module
) -> None:
    rgb = np.asarray(drawing((128, 128)).convert("RGB"))
    ours = cn.midas.predict(model, rgb)
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        theirs = model(pixel_values=x).predicted_depth[0].numpy()
    assert np.array_equal(ours, theirs) and ours.std() > 0
    assert cn.midas.predict(model, cn.midas.pad64(np.asarray(drawing((96, 64)).convert("RGB")))).shape == (
        64,
        128,
    )


@pytest.fixture(scope="module")
def depth(cn: SimpleNamespace, model: torch.nn.Module) -> np.ndarray:
    """The raw depth of drawing((96, 64)), edge-padded to 128 x 64 as the preprocessors run it."""
    return cn.midas.predict(model, cn.midas.pad64(np.asarray(drawing((96, 64)).convert("RGB"))))


def test_depth_midas_is_the_scaled_depth_cropped(cn: SimpleNamespace, data: Path, depth: np.ndarray) -> None:
    out = cn.preprocess.run("depth_midas", drawing((96, 64)), 64, models_dir=data / "models")
    a = np.asarray(out)
    assert out.mode == "RGB" and a.shape == (64, 96, 3)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    want = (cn.midas.scaled(depth) * 255).clip(0, 255).astype(np.uint8)[:64, :96]
    assert np.array_equal(a[..., 0], want) and a.max() > a.min()


def test_normal_midas_follows_the_sobel_formula(cn: SimpleNamespace, data: Path, depth: np.ndarray) -> None:
    out = np.asarray(cn.preprocess.run("normal_midas", drawing((96, 64)), 64, models_dir=data / "models"))
    assert out.shape == (64, 96, 3)
    gx = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    flat = (depth - depth.min()) / (depth.max() - depth.min()) < 0.4  # the default threshold
    gx[flat], gy[flat] = 0, 0
    n = np.stack([gx, gy, np.full_like(gx, 2 * np.pi)], axis=2)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    want = (n * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:64, :96]
    assert np.array_equal(out, want)
    assert 0 < flat[:64, :96].mean() < 1  # both background and shaped pixels in this map


def test_the_background_threshold_changes_the_map(cn: SimpleNamespace, data: Path) -> None:
    def normal(a: float) -> np.ndarray:
        img = cn.preprocess.run(
            "normal_midas", drawing((64, 64)), 64, threshold_a=a, models_dir=data / "models"
        )
        return np.asarray(img)

    default, none_flat, all_flat = normal(-1), normal(0.0), normal(1.0)
    assert np.array_equal(default, normal(0.4))
    assert not np.array_equal(none_flat, default) and not np.array_equal(all_flat, default)
    flat = np.all(all_flat == (127, 127, 255), axis=2)
    assert flat.mean() > 0.99  # only the maximum itself is not below 1.0


def test_module_list_shows_the_sliders(cn: SimpleNamespace) -> None:
    detail = cn.routes.module_list()["module_detail"]
    res, bg = detail["normal_midas"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    assert bg == {"name": "Normal Background Threshold", "value": 0.4, "min": 0.0, "max": 1.0}
    assert [s["name"] for s in detail["depth_midas"]["sliders"]] == ["Preprocessor Resolution"]


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    for module in ("depth_midas", "normal_midas"):
        with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=rf"needs {FILE} in models/ControlNet"):
            cn.preprocess.run(module, drawing(), models_dir=tmp_path)
    folder = tmp_path / "ControlNet" / "annotators"
    write_depth_anything(folder)
    (folder / "depth_anything_vitl14.pth").rename(folder / FILE)
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable, match=rf"normal_midas preprocessor cannot use {FILE}: not a MiDaS"
    ):
        cn.preprocess.run("normal_midas", drawing(), models_dir=tmp_path)
    body = {"controlnet_module": "depth_midas", "controlnet_input_images": [b64(drawing((64, 64)))]}
    with pytest.raises(RequestError, match=f"{FILE}: not a MiDaS DPT-Hybrid model") as err:
        cn.routes.detect(body, tmp_path)
    assert err.value.field == "controlnet_module"
