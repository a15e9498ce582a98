"""The controlnet extension's parts that need no sampling: files, layouts, preprocessors, units, infotext."""

from __future__ import annotations

import base64
import io
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from tests.fixtures_controlnet import build_tiny_controlnet, extension_modules
from webui.core.models.tiny import unet_config
from webui.core.outputs.infotext import format_infotext, parse_infotext


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return extension_modules(tmp_path_factory.mktemp("cn-ext"))


def drawing(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Black shapes on white: edges, lines and flat areas for the preprocessors."""
    image = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(image)
    d.rectangle((10, 10, 40, 50), outline="black", width=3)
    d.ellipse((50, 8, 90, 56), fill=(40, 40, 40))
    d.line((0, 60, 95, 2), fill="black", width=2)
    return image


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---- files and layouts ------------------------------------------------------------------------------


SEEDS = {"sd1": 1, "sdxl": 2}


@pytest.mark.parametrize("layout", ["diffusers", "ldm", "ldm-bare"])
@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_every_layout_loads_bit_equal(
    arch: str, layout: str, cn: SimpleNamespace, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    path = tiny_controlnet_files[arch, layout]
    sd, base = cn.models.read_controlnet(path)
    assert base == arch
    model = cn.models.load_controlnet(path, unet_config(arch))
    ref = build_tiny_controlnet(arch, SEEDS[arch]).state_dict()
    got = model.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref), f"{arch} {layout}: weights differ"
    assert not any(p.is_meta for p in model.parameters())
    assert not model.training


def test_half_precision_file_loads_in_the_asked_dtype(cn: SimpleNamespace, tmp_path: Path) -> None:
    from tests.fixtures_controlnet import to_ldm

    model = build_tiny_controlnet("sd1", 1)
    half = {k: v.half() for k, v in to_ldm(model).items()}
    save_file(half, str(tmp_path / "cn-fp16.safetensors"))
    loaded = cn.models.load_controlnet(tmp_path / "cn-fp16.safetensors", unet_config("sd1"))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.equal(loaded.conv_in.weight, model.conv_in.weight.half().float())
    as_half = cn.models.load_controlnet(tmp_path / "cn-fp16.safetensors", dtype=torch.float16)
    assert {p.dtype for p in as_half.parameters()} == {torch.float16}


def test_config_from_weights_alone_follows_the_real_family(
    cn: SimpleNamespace, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    sd1, _ = cn.models.read_controlnet(tiny_controlnet_files["sd1", "ldm"])
    cfg = cn.layout.infer_config(sd1)
    assert cfg["attention_head_dim"] == 8 and not cfg["use_linear_projection"]  # SD1: 8 heads
    assert cfg["block_out_channels"] == (32, 64) and cfg["layers_per_block"] == 2
    assert cfg["down_block_types"] == ("CrossAttnDownBlock2D", "DownBlock2D")
    xl, _ = cn.models.read_controlnet(tiny_controlnet_files["sdxl", "diffusers"])
    cfg = cn.layout.infer_config(xl)
    assert cfg["addition_time_embed_dim"] == 256  # real SDXL's, without the base UNet's config
    assert cfg["transformer_layers_per_block"] == (1, 2)
    assert cn.layout.infer_config(xl, unet_config("sdxl"))["addition_time_embed_dim"] == 8


def test_sdxl_controlnet_with_sd1_model_is_refused(
    cn: SimpleNamespace, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    with pytest.raises(cn.layout.ControlNetFileError, match=r"ControlNet for SDXL.*cannot be used"):
        cn.models.load_controlnet(tiny_controlnet_files["sdxl", "ldm"], unet_config("sd1"))
    with pytest.raises(cn.layout.ControlNetFileError, match=r"ControlNet for SD 1.x"):
        cn.models.load_controlnet(tiny_controlnet_files["sd1", "diffusers"], unet_config("sdxl"))


def test_listing_titles_and_lookup(
    cn: SimpleNamespace, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    models_dir = tiny_controlnet_files["sd1", "ldm"].parents[1]
    listed = cn.models.list_models(models_dir)
    assert [m.name for m in listed] == sorted(p.stem for p in tiny_controlnet_files.values())
    m = next(m for m in listed if m.name == "tiny-cn-sd1-ldm")
    assert m.title == f"tiny-cn-sd1-ldm [{m.short_hash}]" and len(m.short_hash) == 8
    import hashlib

    data = m.path.read_bytes()
    assert m.short_hash == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]  # A1111's old hash
    for wanted in (m.title, m.name, "tiny-cn-sd1-ldm [00000000]"):
        assert cn.models.find_model(listed, wanted) == m
    with pytest.raises(KeyError):
        cn.models.find_model(listed, "control_v11p_sd15_canny [d14c016b]")


def test_listing_skips_annotators_and_reads_diffusers_folders(
    cn: SimpleNamespace, tmp_path: Path, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    root = tmp_path / "ControlNet"
    (root / "annotators").mkdir(parents=True)
    (root / "annotators" / "body_pose_model.pth").write_bytes(b"x")
    model = build_tiny_controlnet("sd1", 1)
    model.save_pretrained(root / "my-cn")
    listed = cn.models.list_models(tmp_path)
    assert [m.name for m in listed] == ["my-cn"]
    assert listed[0].path.name == "diffusion_pytorch_model.safetensors"
    loaded = cn.models.load_controlnet(listed[0].path, unet_config("sd1"))
    assert torch.equal(loaded.conv_in.weight, model.conv_in.weight)


def test_unsafe_or_foreign_files_are_refused(cn: SimpleNamespace, tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (print, ("ran",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(cn.layout.ControlNetFileError, match="evil.pth"):
        cn.models.read_controlnet(evil)
    control_lora = tmp_path / "control-lora-canny-rank128.safetensors"
    save_file(
        {"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(2)}, str(control_lora)
    )
    with pytest.raises(cn.layout.ControlNetFileError, match="a Control-LoRA file: it is made dense"):
        cn.models.read_controlnet(control_lora)
    diff = tmp_path / "diff_control_sd15_canny.safetensors"
    save_file(
        {"difference": torch.zeros(1), "control_model.input_hint_block.0.weight": torch.zeros(2)}, str(diff)
    )
    with pytest.raises(cn.layout.ControlNetFileError, match="'difference' ControlNet"):
        cn.models.read_controlnet(diff)
    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(other))
    with pytest.raises(cn.layout.ControlNetFileError, match="no ControlNet weights"):
        cn.models.read_controlnet(other)


def test_global_pooling_from_the_yaml_beside_or_the_name(cn: SimpleNamespace, tmp_path: Path) -> None:
    shuffle = tmp_path / "control_v11e_sd15_shuffle.pth"
    assert cn.models.global_pooling(shuffle) and not cn.models.global_pooling(tmp_path / "canny.pth")
    cfg = {"model": {"params": {"control_stage_config": {"params": {"global_average_pooling": False}}}}}
    shuffle.with_suffix(".yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert not cn.models.global_pooling(shuffle)
    cfg["model"]["params"]["control_stage_config"]["params"]["global_average_pooling"] = True
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert cn.models.global_pooling(tmp_path / "odd.safetensors")


# ---- preprocessors ----------------------------------------------------------------------------------


def test_canny_finds_the_drawn_edges(cn: SimpleNamespace) -> None:
    out = cn.preprocess.run("canny", drawing(), 64, 100, 200)
    a = np.asarray(out)
    assert out.size == (96, 64) and out.mode == "RGB"
    assert set(np.unique(a)) == {0, 255}
    assert a[:, :, 0][10:51, 10].max() == 255  # the rectangle's left side
    assert a[30:35, 2:6].max() == 0  # flat white: no edge
    low = np.asarray(cn.preprocess.run("canny", drawing(), 64, 1, 2)).sum()
    assert low >= a.sum()  # lower thresholds keep at least as many edges


@pytest.mark.parametrize(
    "module",
    ["invert", "threshold", "scribble_xdog", "lineart_standard", "tile_resample", "blur_gaussian", "shuffle"],
)
def test_weight_free_preprocessors_make_maps(module: str, cn: SimpleNamespace) -> None:
    image = drawing()
    out = cn.preprocess.run(module, image, 128)
    assert out.mode == "RGB" and min(out.size) == 128  # scaled so the short side is the resolution
    a = np.asarray(out).astype(int)
    assert a.std() > 5, f"{module}: a flat map"
    assert np.array_equal(a, np.asarray(cn.preprocess.run(module, image, 128)))  # deterministic


def test_line_maps_are_white_lines_on_black(cn: SimpleNamespace) -> None:
    for module in ("invert", "threshold", "lineart_standard", "scribble_xdog"):
        out = np.asarray(cn.preprocess.run(module, drawing(), 64).convert("L")).astype(int)
        line = out[12:48, 10:13].mean() if module != "threshold" else 255 - out[12:48, 10:13].mean()
        assert line > out[30:35, 2:6].mean() + 50 or module == "threshold", module
    thr = np.asarray(cn.preprocess.run("threshold", drawing(), 64, 127).convert("L"))
    assert thr[30, 3] == 255 and thr[12:48, 11].min() == 0  # white paper above 127; the black line below


def test_inpaint_keeps_the_mask_and_none_passes_through(cn: SimpleNamespace) -> None:
    image = drawing().convert("RGBA")
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 47, 63), fill=255)
    image.putalpha(mask)
    out = cn.preprocess.run("inpaint_only", image)
    t = cn.images.control_tensor(out, 96, 64, cn.images.ResizeMode.CROP)
    assert t.shape == (1, 3, 64, 96)
    assert (t[..., :48] == -1).all() and (t[..., 48:] >= 0).all()
    plain = cn.preprocess.run("none", drawing())
    assert np.array_equal(np.asarray(plain), np.asarray(drawing()))


def test_annotators_needing_weights_name_the_file(cn: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        cn.preprocess.AnnotatorUnavailable,
        match=r"dpt_hybrid-midas-501f0c75\.pt in models/ControlNet/annotators",
    ):
        cn.preprocess.run("depth_midas", drawing(), models_dir=tmp_path)
    with pytest.raises(KeyError):
        cn.preprocess.get_module("no_such_module")


# ---- images -----------------------------------------------------------------------------------------


def test_resize_modes_and_pixel_perfect(cn: SimpleNamespace) -> None:
    im, RM = cn.images, cn.images.ResizeMode
    src = Image.new("RGB", (200, 100), "white")
    for mode in RM:
        assert im.resize_to(src, 64, 64, mode).size == (64, 64)
    filled = np.asarray(im.resize_to(src, 64, 64, RM.FILL))
    assert filled[0, 32].max() == 0 and filled[32, 32].min() == 255  # black bands above and below
    cropped = np.asarray(im.resize_to(src, 64, 64, RM.CROP))
    assert cropped.min() == 255  # no band: the sides were cut
    assert im.pixel_perfect_resolution((200, 100), (64, 64), RM.CROP) == 64
    assert im.pixel_perfect_resolution((200, 100), (64, 64), RM.FILL) == 32
    t = im.control_tensor(Image.new("RGB", (8, 8), (255, 0, 51)), 8, 8, RM.CROP)
    assert t.shape == (1, 3, 8, 8) and torch.allclose(t[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


# ---- units ------------------------------------------------------------------------------------------


def unit(**kw: object) -> dict[str, object]:
    return {"module": "canny", "model": "tiny-cn-sd1-ldm", "image": b64(drawing()), **kw}


def test_unit_parses_the_api_forms(cn: SimpleNamespace) -> None:
    U = cn.units
    u = U.parse_unit(0, unit(weight=0.5, resize_mode="Just Resize", control_mode=2, threshold_a=50))
    assert u.weight == 0.5 and u.resize_mode is cn.images.ResizeMode.JUST_RESIZE
    assert u.control_mode is U.ControlMode.CONTROL and u.threshold_a == 50 and u.threshold_b == -1
    assert u.image.size == (96, 64) and u.mask is None and u.guidance_end == 1.0
    mask = b64(Image.new("L", (96, 64), 255))
    for form in ({"image": {"image": b64(drawing()), "mask": mask}}, {"image": [b64(drawing()), mask]},
                 {"mask": mask}, {"mask_image": mask}):  # fmt: skip
        got = U.parse_unit(1, unit(**form))
        assert got.mask is not None and got.mask.mode == "L" and np.asarray(got.mask).min() == 255
    assert U.parse_unit(0, unit(control_mode="My prompt is more important", resize_mode=2)).resize_mode is (
        cn.images.ResizeMode.FILL
    )
    legacy = U.parse_unit(
        0, {"module": "canny", "model": "m", "input_image": b64(drawing()), "guidance": 0.5}
    )
    assert legacy.image is not None and legacy.guidance_end == 0.5
    assert U.parse_unit(0, unit(enabled=False)) is None
    assert U.parse_unit(0, unit(image=f"data:image/png;base64,{b64(drawing())}")).image.size == (96, 64)


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"weight": 3}, "weight", "between 0 and 2"),
        ({"weight": "x"}, "weight", "must be a number"),
        ({"module": "magic"}, "module", "unknown module 'magic'"),
        ({"model": "None"}, "model", "model is required"),
        ({"image": "not base64!"}, "image", "not base64"),
        ({"image": base64.b64encode(b"not an image").decode()}, "image", "not a readable image"),
        ({"image": 5}, "image", "base64-encoded image"),
        ({"resize_mode": 7}, "resize_mode", "must be one of"),
        ({"control_mode": "Loud"}, "control_mode", "must be one of"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start", "after guidance_end"),
        ({"guidance_end": 1.5}, "guidance_end", "between 0 and 1"),
        ({"processor_res": 10}, "processor_res", "between 64 and 2048"),
        ({"threshold_a": 300}, "threshold_a", "between 1 and 255"),
        ({"pixel_perfect": "yes"}, "pixel_perfect", "true or false"),
        ({"mask": b64(Image.new("L", (8, 8)))}, "mask", "mask is 8x8, image 96x64"),
    ],
)
def test_bad_units_name_unit_and_field(changes: dict, field: str, text: str, cn: SimpleNamespace) -> None:
    args = [unit(), unit(**changes)]
    with pytest.raises(cn.units.UnitError, match=text) as info:
        cn.units.parse_units(args)
    assert info.value.unit == 1 and info.value.name == field
    assert info.value.field == f"controlnet.args[1].{field}"
    assert str(info.value).startswith(f"controlnet.args[1].{field}: ControlNet unit 1:")


def test_unit_list_limits_and_model_lookup(cn: SimpleNamespace, tiny_controlnet_files: dict) -> None:
    from webui.core.types import RequestError

    with pytest.raises(RequestError, match="at most 8 ControlNet units, got 20"):
        cn.units.parse_units([unit()] * 20)
    with pytest.raises(RequestError, match="must be a list"):
        cn.units.parse_units({"module": "canny"})
    listed = cn.models.list_models(tiny_controlnet_files["sd1", "ldm"].parents[1])
    [u] = cn.units.parse_units([unit()], models=listed)
    assert u.model == next(m.title for m in listed if m.name == "tiny-cn-sd1-ldm")
    with pytest.raises(cn.units.UnitError, match="'gone' is not in models/ControlNet") as info:
        cn.units.parse_units([unit(), unit(model="gone")], models=listed)
    assert info.value.unit == 1


# ---- infotext ---------------------------------------------------------------------------------------


def test_infotext_round_trip(cn: SimpleNamespace) -> None:
    units = cn.units.parse_units(
        [unit(model="cn-canny [d14c016b]", threshold_a=100, threshold_b=200, processor_res=512),
         unit(enabled=False),
         unit(module="shuffle", model="cn-shuffle", weight=0.55, control_mode=1, resize_mode=2,
              guidance_start=0.1, guidance_end=0.75, pixel_perfect=True)]
    )  # fmt: skip
    params = cn.infotext.infotext_params(units)
    assert list(params) == ["ControlNet 0", "ControlNet 2"]  # the unit's index in the request
    assert params["ControlNet 0"] == (
        "Module: canny, Model: cn-canny [d14c016b], Weight: 1, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )
    text = format_infotext("a cat", "", {"Steps": 20, "Sampler": "Euler", "Seed": 1, **params})
    assert 'ControlNet 0: "Module: canny, Model: cn-canny [d14c016b], Weight: 1,' in text
    back = cn.infotext.units_from_params(parse_infotext(text))
    assert sorted(back) == [0, 2]
    assert back[2]["weight"] == 0.55 and back[2]["control_mode"] == "My prompt is more important"
    assert back[2]["resize_mode"] == "Resize and Fill" and back[2]["pixel_perfect"] is True
    for i, d in back.items():  # the read-back dicts are valid units equal to the written ones (no image)
        again = cn.units.parse_unit(i, d)
        written = next(u for u in units if u.index == i)
        assert cn.infotext.format_unit(again) == cn.infotext.format_unit(written)


def test_infotext_from_sd_webui_controlnet_reads(cn: SimpleNamespace) -> None:
    text = (
        'a house\nSteps: 20, Sampler: DPM++ 2M, Seed: 5, ControlNet 0: "Module: canny, Model: '
        "control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, Low Vram: False, "
        "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
        'Pixel Perfect: False, Control Mode: Balanced, Hr Option: Both, Save Detected Map: True"'
    )
    [(i, d)] = cn.infotext.units_from_params(parse_infotext(text)).items()
    u = cn.units.parse_unit(i, d)
    assert (u.module, u.model, u.weight, u.threshold_b) == (
        "canny",
        "control_v11p_sd15_canny [d14c016b]",
        1.0,
        200,
    )


# ---- routes -----------------------------------------------------------------------------------------


def test_routes_list_version_models_and_modules(cn: SimpleNamespace, tiny_controlnet_files: dict) -> None:
    R = cn.routes
    assert R.version() == {"version": 2}
    models_dir = tiny_controlnet_files["sd1", "ldm"].parents[1]
    titles = R.model_list(models_dir)["model_list"]
    assert titles == [m.title for m in cn.models.list_models(models_dir)] and len(titles) == 6
    modules = R.module_list()
    assert (
        modules["module_list"][:3] == ["none", "invert", "canny"] and "depth_midas" in modules["module_list"]
    )
    canny = modules["module_detail"]["canny"]
    assert canny["model_free"] is True
    assert [s["name"] for s in canny["sliders"]] == [
        "Preprocessor Resolution",
        "Low Threshold",
        "High Threshold",
    ]
    assert canny["sliders"][1] == {"name": "Low Threshold", "value": 100, "min": 1, "max": 255}
    assert modules["module_detail"]["depth_zoe"] == {"model_free": False, "sliders": []}  # cannot run yet
    midas = modules["module_detail"]["depth_midas"]["sliders"]
    assert [s["name"] for s in midas] == ["Preprocessor Resolution"]
    aliased = R.module_list(alias_names=True)["module_list"]
    assert "invert (from white bg & black line)" in aliased and "invert" not in aliased


def test_detect_returns_the_maps(cn: SimpleNamespace) -> None:
    body = {
        "controlnet_module": "canny",
        "controlnet_input_images": [b64(drawing()), b64(drawing((64, 64)))],
        "controlnet_processor_res": 64,
        "controlnet_threshold_a": 50,
        "controlnet_threshold_b": 150,
    }
    out = cn.routes.detect(body)
    assert out["info"] == "Success" and len(out["images"]) == 2
    got = cn.images.decode_base64_image(out["images"][0])
    assert np.array_equal(np.asarray(got), np.asarray(cn.preprocess.run("canny", drawing(), 64, 50, 150)))
    mask = b64(Image.new("L", (96, 64), 255))
    inpaint = cn.routes.detect(
        {
            "controlnet_module": "inpaint_only",
            "controlnet_input_images": [b64(drawing())],
            "controlnet_masks": [mask],
        }
    )
    assert cn.images.decode_base64_image(inpaint["images"][0]).getchannel("A").getextrema() == (255, 255)


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"controlnet_module": "magic"}, "controlnet_module", "unknown module"),
        ({"controlnet_input_images": []}, "controlnet_input_images", "at least one"),
        ({"controlnet_input_images": ["%%%"]}, "controlnet_input_images[0]", "not base64"),
        ({"controlnet_processor_res": 5}, "controlnet_processor_res", "between 64 and 2048"),
        ({"controlnet_threshold_a": "x"}, "controlnet_threshold_a", "must be a number"),
        (
            {"controlnet_module": "openpose_full"},
            "controlnet_module",
            "body_pose_model.pth, hand_pose_model.pth",
        ),
    ],
)
def test_detect_errors_name_the_field(body: dict, field: str, text: str, cn: SimpleNamespace) -> None:
    from webui.core.types import RequestError

    full = {"controlnet_module": "canny", "controlnet_input_images": [b64(drawing())], **body}
    with pytest.raises(RequestError, match=text) as info:
        cn.routes.detect(full)
    assert info.value.field == field
