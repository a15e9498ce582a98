"""The depth_anything and depth_anything_v2 preprocessors: original-layout files (written from the original
network's key list, not from transformers' model) in models/ControlNet/annotators, converted and loaded
strictly into transformers' DepthAnythingForDepthEstimation; the maps, the real server's
/controlnet/detect, and clear errors naming the file for a missing or foreign file."""

from __future__ import annotations

import base64
import importlib
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_controlnet import extension_modules
from tests.fixtures_depth import VIT_SIZES, depth_anything_shapes, write_depth_anything
from tests.test_ext_controlnet import b64, drawing
from tests.test_server_harness import running_server
from webui.core.types import RequestError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("depth-data")
    write_depth_anything(d / "models" / "ControlNet" / "annotators")
    return d


@pytest.fixture(scope="module")
def cn(data: Path) -> SimpleNamespace:
    mods = extension_modules(data)
    mods.da = importlib.import_module(f"{mods.models.__package__}.depth_anything")
    return mods


def annotators(data: Path) -> Path:
    return data / "models" / "ControlNet" / "annotators"


@pytest.mark.parametrize("size", ["vits", "vitb", "vitl"])
def test_real_sizes_convert_key_for_key(cn: SimpleNamespace, size: str) -> None:
    """The real ViT-S/B/L layouts (shapes only, on the meta device) fill every parameter, none left over."""
    sd = {k: torch.empty(s, device="meta") for k, s in depth_anything_shapes(size).items()}
    width, blocks, _, _ = VIT_SIZES[size]
    for version, last in ((1, blocks), (2, blocks)):
        config = cn.da.config_from(sd, version, "x.pth")
        with torch.device("meta"):
            model = cn.da.DepthAnythingForDepthEstimation(config)
        model.load_state_dict(cn.da.to_transformers(sd), strict=True, assign=True)
        assert config.backbone_config.num_attention_heads == width // 64
        assert config.backbone_config.out_indices[-1] == last
    params = sum(p.numel() for p in model.parameters())
    assert (
        params == {"vits": 24_785_089, "vitb": 97_470_785, "vitl": 335_315_649}[size]
    )  # the published sizes


def test_v1_and_v2_read_different_layers(cn: SimpleNamespace) -> None:
    assert cn.da.out_indices(24, 1) == [21, 22, 23, 24] and cn.da.out_indices(24, 2) == [5, 12, 18, 24]
    assert cn.da.out_indices(12, 2) == [3, 6, 9, 12] and cn.da.out_indices(8, 2) == [2, 4, 6, 8]


def test_the_tiny_file_loads_every_key(cn: SimpleNamespace, data: Path) -> None:
    path = annotators(data) / "depth_anything_vitl14.pth"
    sd = torch.load(path, weights_only=True)
    model = cn.da.load_model(path, 1)
    got = model.state_dict()
    assert len(got) == len(sd) + 4 * VIT_SIZES["tiny"][1]  # qkv split in three, per block
    assert torch.equal(
        got["neck.fusion_stage.layers.0.projection.weight"],
        sd["depth_head.scratch.refinenet4.out_conv.weight"],
    )
    assert torch.equal(got["neck.convs.2.weight"], sd["depth_head.scratch.layer3_rn.weight"])
    assert not model.training and all(p.device.type == "cpu" for p in model.parameters())


def test_the_first_block_computes_what_the_original_block_does(cn: SimpleNamespace, data: Path) -> None:
    """timm's block from the original keys (fused qkv, 64-wide heads, layer scales) = transformers' layer."""
    path = annotators(data) / "depth_anything_vitl14.pth"
    sd = torch.load(path, weights_only=True)
    model = cn.da.load_model(path, 1)
    x = torch.randn(1, 10, VIT_SIZES["tiny"][0], generator=torch.Generator().manual_seed(0))
    p = "pretrained.blocks.0."
    heads = x.shape[-1] // 64

    def ln(t: torch.Tensor, n: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(
            t, t.shape[-1:], sd[p + n + ".weight"], sd[p + n + ".bias"], 1e-6
        )

    qkv = ln(x, "norm1") @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
    q, k, v = qkv.reshape(1, 10, 3, heads, 64).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v
    att = att.transpose(1, 2).reshape(1, 10, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    y = x + sd[p + "ls1.gamma"] * att
    mlp = torch.nn.functional.gelu(ln(y, "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
    want = y + sd[p + "ls2.gamma"] * (mlp @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"])
    with torch.no_grad():
        got = model.backbone.encoder.layer[0](x)
    got = got[0] if isinstance(got, tuple) else got
    assert torch.allclose(got, want, atol=1e-5)


def test_network_input_size_follows_the_original_resize(cn: SimpleNamespace) -> None:
    assert cn.da.net_size(64, 96) == (518, 784)  # 777 -> nearest multiple of 14
    assert cn.da.net_size(512, 512) == (518, 518)
    assert cn.da.net_size(600, 300) == (1036, 518)
    assert cn.da.net_size(100, 103) == (518, 532)  # 533.4 rounds to 532: still >= 518


@pytest.fixture(scope="module")
def maps(cn: SimpleNamespace, data: Path) -> dict[str, np.ndarray]:
    """Each module's map of drawing((96, 64)) at resolution 64, made once."""
    return {
        m: np.asarray(cn.preprocess.run(m, drawing((96, 64)), 64, models_dir=data / "models"))
        for m in ("depth_anything", "depth_anything_v2")
    }


@pytest.mark.parametrize("module", ["depth_anything", "depth_anything_v2"])
def test_maps_are_grey_rgb_min_max_depth(
    module: str, cn: SimpleNamespace, data: Path, maps: dict[str, np.ndarray]
) -> None:
    a = maps[module]
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    assert a.min() == 0 and a.max() == 255
    version = 2 if module.endswith("v2") else 1
    model = cn.da.load_model(annotators(data) / cn.da.FILES[module], version)  # loaded afresh: deterministic
    depth = cn.da.predict(model, np.asarray(drawing((96, 64)).convert("RGB")))
    assert depth.shape == (64, 96) and np.array_equal(a[..., 0], cn.da.to_gray(depth))


def test_each_version_uses_its_file_and_its_layers(
    cn: SimpleNamespace, data: Path, maps: dict[str, np.ndarray]
) -> None:
    v1_file_as_v2 = cn.da.load_model(annotators(data) / "depth_anything_vitl14.pth", 2)
    as_v2 = cn.da.to_gray(cn.da.predict(v1_file_as_v2, np.asarray(drawing((96, 64)).convert("RGB"))))
    assert not np.array_equal(maps["depth_anything"][..., 0], as_v2)  # other layers feed the head
    assert not np.array_equal(maps["depth_anything_v2"][..., 0], as_v2)  # the v2 file's own weights


def test_resolution_sets_the_map_size(cn: SimpleNamespace, data: Path) -> None:
    out = cn.preprocess.run("depth_anything", drawing((96, 64)), 32, models_dir=data / "models")
    assert out.size == (48, 32)


def test_missing_or_foreign_files_are_clear_errors(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable,
        match=r"needs depth_anything_v2_vitl\.safetensors in models/ControlNet/annotators",
    ):
        cn.preprocess.run("depth_anything_v2", drawing(), models_dir=tmp_path)
    folder = tmp_path / "ControlNet" / "annotators"
    folder.mkdir(parents=True)
    torch.save({"model0.1.weight": torch.zeros(2, 3, 7, 7)}, folder / "depth_anything_vitl14.pth")
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable,
        match=r"depth_anything preprocessor cannot use depth_anything_vitl14\.pth: not a Depth Anything",
    ):
        cn.preprocess.run("depth_anything", drawing(), models_dir=tmp_path)
    sd = {k: torch.zeros(s) for k, s in depth_anything_shapes("tiny").items()}
    sd["depth_head.scratch.refinenet5.out_conv.weight"] = torch.zeros(1)  # one key too many
    torch.save(sd, folder / "depth_anything_vitl14.pth")
    with pytest.raises(cn.preprocess.AnnotatorUnavailable, match=r"weights do not fit.*refinenet5"):
        cn.preprocess.run("depth_anything", drawing(), models_dir=tmp_path)


def test_detect_reports_a_missing_file_on_the_module(cn: SimpleNamespace, tmp_path: Path) -> None:
    body = {"controlnet_module": "depth_anything", "controlnet_input_images": [b64(drawing((64, 64)))]}
    with pytest.raises(
        RequestError, match="depth_anything_vitl14.pth in models/ControlNet/annotators"
    ) as err:
        cn.routes.detect(body, tmp_path)
    assert err.value.field == "controlnet_module"


@pytest.fixture(scope="module")
def client(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_server(data, tmp_path_factory.mktemp("depth-http"), flags=["--api"]) as srv,
        srv.client() as c,
    ):
        yield c


def test_detect_over_http_returns_the_depth_map(client: httpx.Client, maps: dict[str, np.ndarray]) -> None:
    listed = client.get("/controlnet/module_list").json()
    assert {"depth_anything", "depth_anything_v2"} <= set(listed["module_list"])
    (res,) = listed["module_detail"]["depth_anything_v2"]["sliders"]
    assert res["name"] == "Preprocessor Resolution" and res["value"] == 512
    body = {"controlnet_module": "depth_anything", "controlnet_input_images": [b64(drawing((96, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    r = client.post("/controlnet/detect", json=body)
    assert r.status_code == 200 and r.json()["info"] == "Success", r.text
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
    assert np.array_equal(got, maps["depth_anything"])
