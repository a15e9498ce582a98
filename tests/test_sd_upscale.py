"""A1111's "SD upscale" script (extensions/a1111_scripts/sd_upscale.py): the tile layout, the blend across
overlaps, and real runs of the tiny SD1 model over /sdapi/v1/img2img and /sdapi/v1/txt2img as A1111
clients send them (script_name "sd upscale", positional script_args [info, overlap, upscaler index, scale
factor]), with a test extension's upscaler (nearest 2x, colours inverted) among the studio's. On txt2img
the result must equal what img2img SD upscale makes of the txt2img picture."""

from __future__ import annotations

import base64
import importlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.test_plugins_host import write_extension
from tests.test_server_harness import Running, running_server
from webui.core.config import AppConfig
from webui.plugins.host import PluginHost

INVERTED = "Inverted 2x"  # the test extension's upscaler: a nearest resize, colours inverted
INVERTER = f"""
from PIL import Image, ImageOps
from webui.plugins.api import UpscalerSpec, hookimpl

def upscale(image, width, height):
    return ImageOps.invert(image.convert("RGB").resize((width, height), resample=Image.Resampling.NEAREST))

@hookimpl
def register(registry):
    registry.add(UpscalerSpec({INVERTED!r}, upscale, scale=2.0))
"""
FAST = dict(prompt="a red cube", steps=2, width=64, height=64, seed=7, cfg_scale=5, denoising_strength=0.5)


@pytest.fixture(scope="module")
def sd_upscale(tmp_path_factory: pytest.TempPathFactory) -> Any:
    h = PluginHost.for_config(AppConfig.for_data_dir(tmp_path_factory.mktemp("d")), include_pip=False)
    ext = h.extension("a1111_scripts")
    assert ext.loaded, ext.error
    return importlib.import_module(f"{ext.module.__package__}.sd_upscale")


def _picture(w: int = 64, h: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_tiles_cover_the_picture_overlapping_at_least_as_asked(sd_upscale: Any) -> None:
    assert sd_upscale.tile_starts(128, 64, 32) == [0, 32, 64]
    assert sd_upscale.tile_starts(64, 64, 32) == [0]
    starts = sd_upscale.tile_starts(200, 64, 16)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert all(a + 64 - b >= 16 for a, b in zip(starts, starts[1:], strict=False))


def test_blend_puts_unchanged_tiles_back_exactly_and_ramps_across_overlaps(sd_upscale: Any) -> None:
    picture = _picture(160, 96)
    xs, ys = sd_upscale.tile_starts(160, 64, 16), sd_upscale.tile_starts(96, 64, 16)
    tiles = [[picture.crop((x, y, x + 64, y + 64)) for x in xs] for y in ys]
    assert np.array_equal(np.asarray(sd_upscale.blend(tiles, xs, ys, picture.size, 16)), np.asarray(picture))
    # two tiles side by side, black and white: white rises across the overlap, each alone outside it
    black, white = Image.new("RGB", (64, 64), 0), Image.new("RGB", (64, 64), (255, 255, 255))
    xs = sd_upscale.tile_starts(96, 64, 32)
    out = np.asarray(sd_upscale.blend([[black, white]], xs, [0], (96, 64), 32))[10, :, 0].astype(int)
    assert xs == [0, 32]
    assert (out[:32] == 0).all() and (out[64:] == 255).all()
    assert 0 < out[40] < out[48] < out[56] < 255 and (np.diff(out[32:64]) >= 0).all()


@pytest.fixture(scope="module")
def server(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("sd-upscale-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors").symlink_to(tiny_files["sd1"])
    write_extension(data / "extensions", "inverter", INVERTER, api_version="2.4")
    with running_server(data, tmp_path_factory.mktemp("sd-upscale-api")) as running:
        yield running


@pytest.fixture(scope="module")
def c(server: Running) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_sd_upscale_over_the_api_redraws_tiles_and_blends_them(c: httpx.Client) -> None:
    init = _picture()
    body = {**FAST, "init_images": [_b64(init)]}
    r = c.post(
        "/sdapi/v1/img2img", json={**body, "script_name": "sd upscale", "script_args": ["", 32, 1, 2.0]}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1
    out = _image(r.json()["images"][0])
    assert out.shape == (128, 128, 3)  # 64 px x 2, in 3 x 3 tiles of 64 px
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert (
        "Size: 128x128" in text
        and "SD upscale overlap: 32" in text
        and "SD upscale upscaler: Lanczos" in text
    )
    # the top-left 32 px belong to the first tile alone: exactly what img2img makes of that tile
    enlarged = init.resize((128, 128), resample=Image.Resampling.LANCZOS)
    tile = c.post("/sdapi/v1/img2img", json={**body, "init_images": [_b64(enlarged.crop((0, 0, 64, 64)))]})
    assert tile.status_code == 200, tile.text
    first = _image(tile.json()["images"][0])
    assert np.array_equal(out[:32, :32], first[:32, :32])
    assert not np.array_equal(out[32:64, 32:64], first[32:64, 32:64])  # there the neighbours blend in
    assert not np.array_equal(out, np.asarray(enlarged))  # redrawn, not only enlarged


def test_an_extension_upscaler_by_name_or_index_enlarges_the_picture_the_tiles_redraw(
    c: httpx.Client,
) -> None:
    info = {s["name"]: s for s in c.get("/sdapi/v1/script-info").json() if s["is_img2img"]}["sd upscale"]
    choices = {a["label"]: a["choices"] for a in info["args"]}["Upscaler"]
    assert choices == ["None", "Lanczos", "Nearest", INVERTED]  # A1111's indices: the extension's is 3
    init = _picture()
    body = {**FAST, "init_images": [_b64(init)], "script_name": "SD upscale"}
    runs = {
        upscaler: c.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 32, upscaler, 2.0]})
        for upscaler in ("inverted 2X", 3, "Lanczos")
    }
    for r in runs.values():
        assert r.status_code == 200, r.text
    out, by_index, lanczos = (_image(r.json()["images"][0]) for r in runs.values())
    assert out.shape == (128, 128, 3) and np.array_equal(out, by_index)
    text = json.loads(runs[3].json()["info"])["infotexts"][0]
    assert "SD upscale upscaler: Inverted 2x" in text and "Size: 128x128" in text
    # the tiny model's random VAE keeps no colour, so compare with what img2img makes of the picture the
    # extension's upscale(image, 128, 128) gives (a nearest 2x, inverted): the first tile's own corner
    enlarged = ImageOps.invert(init.resize((128, 128), resample=Image.Resampling.NEAREST))
    tile = c.post("/sdapi/v1/img2img", json={**FAST, "init_images": [_b64(enlarged.crop((0, 0, 64, 64)))]})
    assert tile.status_code == 200, tile.text
    first = _image(tile.json()["images"][0])
    assert np.array_equal(out[:32, :32], first[:32, :32])
    assert not np.array_equal(out[:32, :32], lanczos[:32, :32])  # Lanczos enlarges another picture


def test_upscaler_none_keeps_the_size_and_unknown_upscalers_are_refused_listing_the_choices(
    c: httpx.Client,
) -> None:
    body = {**FAST, "init_images": [_b64(_picture())], "script_name": "SD upscale"}
    kept = c.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, 0, 2.0]})
    assert kept.status_code == 200, kept.text
    assert _image(kept.json()["images"][0]).shape == (64, 64, 3)
    assert "SD upscale upscaler: None" in json.loads(kept.json()["info"])["infotexts"][0]
    for upscaler, needle in (("R-ESRGAN 4x+", "'R-ESRGAN 4x+'"), (4, "index 4"), (-1, "index -1")):
        bad = c.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, upscaler, 2.0]})
        assert bad.status_code == 422, bad.text
        assert "script_args.upscaler_index" in bad.text and needle in bad.text, bad.text
        assert "0 (None), 1 (Lanczos), 2 (Nearest), 3 (Inverted 2x)" in bad.text, bad.text
    bad = c.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 64, 1, 2.0]})
    assert bad.status_code == 422 and "script_args.overlap" in bad.text, bad.text


# txt2img (issue 17): the txt2img pictures first, then each one redrawn as the img2img script redraws it


def _pngs(server: Running, kind: str) -> set[Path]:
    return set((server.config.outputs_dir / kind).rglob("*.png"))


def test_txt2img_sd_upscale_redraws_what_txt2img_makes_exactly_as_img2img_sd_upscale_does(
    server: Running, c: httpx.Client
) -> None:
    plain = c.post("/sdapi/v1/txt2img", json=FAST)
    assert plain.status_code == 200, plain.text
    made = _image(plain.json()["images"][0])
    assert made.shape == (64, 64, 3)
    before = _pngs(server, "txt2img-images")
    up = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "save_images": True, "script_name": "SD upscale", "script_args": ["", 32, 1, 2.0]},
    )
    assert up.status_code == 200, up.text
    assert len(up.json()["images"]) == 1  # the upscaled picture only, not the first pass
    out = _image(up.json()["images"][0])
    assert out.shape == (128, 128, 3)  # the txt2img size x the scale factor
    info = json.loads(up.json()["info"])
    text = info["infotexts"][0]
    for needle in (
        "Size: 128x128", "SD upscale overlap: 32", "SD upscale upscaler: Lanczos", "Seed: 7",
        "Denoising strength: 0.5", "Steps: 2", "CFG scale: 5",
    ):  # fmt: skip
        assert needle in text, text
    assert text.startswith("a red cube\n") and info["all_seeds"] == [7]
    # the same settings through img2img SD upscale, from the picture txt2img made: the same pixels (the
    # first pass is seeded, PNG is lossless both ways, and both run the one tile-and-blend code)
    i2i = c.post(
        "/sdapi/v1/img2img",
        json={
            **FAST, "init_images": [plain.json()["images"][0]], "script_name": "SD upscale",
            "script_args": ["", 32, "lanczos", 2.0],
        },
    )  # fmt: skip
    assert i2i.status_code == 200, i2i.text
    assert np.array_equal(out, _image(i2i.json()["images"][0]))
    lanczos = Image.fromarray(made).resize((128, 128), resample=Image.Resampling.LANCZOS)
    assert not np.array_equal(out, np.asarray(lanczos))  # redrawn, not only enlarged
    # saved as txt2img saves: the first pass (64 px) and the upscaled picture, both in txt2img-images
    saved = {p: Image.open(p) for p in _pngs(server, "txt2img-images") - before}
    assert sorted(im.size for im in saved.values()) == [(64, 64), (128, 128)], saved
    (path,) = [p for p, im in saved.items() if im.size == (128, 128)]
    assert np.array_equal(np.asarray(saved[path].convert("RGB")), out)
    assert "SD upscale upscaler: Lanczos" in saved[path].info["parameters"]


def test_txt2img_sd_upscale_upscales_every_picture_of_the_batch_after_a_hires_fix(c: httpx.Client) -> None:
    # hires fix first (64 -> 96 px, the first pass is whatever txt2img makes), then SD upscale x1.5 in
    # 64 px tiles: 144 px pictures, one per picture of the batch, each with its own seed
    body = {
        **FAST, "batch_size": 2, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent",
        "script_name": "SD upscale", "script_args": ["", 16, "Nearest", 1.5],
    }  # fmt: skip
    r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    pictures = [_image(b) for b in r.json()["images"]]
    assert [p.shape for p in pictures] == [(144, 144, 3)] * 2
    assert not np.array_equal(pictures[0], pictures[1])
    info = json.loads(r.json()["info"])
    assert info["all_seeds"] == [7, 8]
    for seed, text in zip((7, 8), info["infotexts"], strict=True):
        assert f"Seed: {seed}," in text and "Size: 144x144" in text and "SD upscale upscaler: Nearest" in text
    # the first picture is what img2img SD upscale makes of the hires first pass
    first_pass = c.post("/sdapi/v1/txt2img", json={**FAST, "enable_hr": True, "hr_scale": 1.5})
    assert first_pass.status_code == 200, first_pass.text
    assert _image(first_pass.json()["images"][0]).shape == (96, 96, 3)
    i2i = c.post(
        "/sdapi/v1/img2img",
        json={
            **FAST, "init_images": first_pass.json()["images"][:1], "script_name": "SD upscale",
            "script_args": ["", 16, "Nearest", 1.5],
        },
    )  # fmt: skip
    assert i2i.status_code == 200, i2i.text
    assert np.array_equal(pictures[0], _image(i2i.json()["images"][0]))


def test_txt2img_sd_upscale_refuses_bad_values_naming_them_before_anything_runs(
    server: Running, c: httpx.Client
) -> None:
    before = _pngs(server, "txt2img-images")
    body = {**FAST, "save_images": True, "script_name": "sd upscale"}
    cases = (
        ({"script_args": ["", 16, "R-ESRGAN 4x+", 2.0]}, "script_args.upscaler_index", "'R-ESRGAN 4x+'"),
        ({"script_args": ["", 64, 1, 2.0]}, "script_args.overlap", "64 px"),
        ({"script_args": ["", 16, 1, 5.0]}, "script_args.scale_factor", "at most 4"),
        ({"script_args": ["", 16, 1, 2.0], "denoising_strength": 1.5}, "denoising_strength", "1.5"),
        ({"script_args": ["", 16, 1, 2.0], "sampler_name": "DPM adaptive"}, "sampler_name", "txt2img only"),
    )
    for extra, field, needle in cases:
        bad = c.post("/sdapi/v1/txt2img", json={**body, **extra})
        assert bad.status_code == 422, bad.text
        assert bad.json()["field"] == field and needle in bad.text, bad.text
    assert _pngs(server, "txt2img-images") == before  # refused before the first pass ran


def test_sd_upscale_is_a_txt2img_and_an_img2img_script_in_the_ui_and_the_api(
    c: httpx.Client, tmp_path: Path
) -> None:
    from webui.api.services import ServerOptions, Services
    from webui.core.engine import Engine
    from webui.ui.script_ui import SCRIPT_KEY, build_scripts

    config = AppConfig.for_data_dir(tmp_path, cache_dir=tmp_path / "cache")
    host = PluginHost.for_config(config, include_pip=False)
    engine = Engine(config, None, host)

    class Ctx:
        services = Services(config, engine, engine.manager, None, None, ServerOptions())

    with gr.Blocks():
        txt2img = build_scripts(Ctx(), "txt2img")
        img2img = build_scripts(Ctx(), "img2img")
    for scripts in (txt2img, img2img):
        assert "SD upscale" in [choice[0] for choice in scripts.components[SCRIPT_KEY].choices]
    upscaler = txt2img.components["_script.SD upscale.upscaler_index"]
    assert [choice[0] for choice in upscaler.choices] == ["None", "Lanczos", "Nearest"]
    chosen = txt2img.selected({SCRIPT_KEY: "SD upscale", "_script.SD upscale.scale_factor": 2.5})
    assert chosen is not None and chosen[0].name == "SD upscale" and chosen[1]["scale_factor"] == 2.5
    listed = c.get("/sdapi/v1/scripts").json()
    assert "sd upscale" in listed["txt2img"] and "sd upscale" in listed["img2img"]
    info = [s for s in c.get("/sdapi/v1/script-info").json() if s["name"] == "sd upscale"]
    assert sorted(s["is_img2img"] for s in info) == [False, True]
