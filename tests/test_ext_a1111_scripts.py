"""A1111's selectable scripts (extensions/a1111_scripts) and the wider X/Y/Z plot: line syntax, real runs on
the tiny SD1 model, and the A1111 API as its clients send it (script_name + positional script_args)."""

from __future__ import annotations

import base64
import importlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_server_harness import running_server
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.tasks.outpaint import extend_canvas
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

BASE = dict(prompt="a red apple", width=64, height=64, steps=2, seed=11, checkpoint="tiny-sd1")
FAST = dict(prompt="a red cube", steps=2, width=64, height=64, seed=7, cfg_scale=5)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> PluginHost:
    h = PluginHost.for_config(AppConfig.for_data_dir(tmp_path_factory.mktemp("d")), include_pip=False)
    assert h.extension("a1111_scripts").loaded, h.extension("a1111_scripts").error
    return h


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    config = AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path_factory.mktemp("out"))
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


def _module(host: PluginHost, name: str) -> Any:
    return importlib.import_module(f"{host.extension('a1111_scripts').module.__package__}.{name}")


def _xyz_axes(host: PluginHost) -> Any:
    return importlib.import_module(f"{host.extension('xyz_plot').module.__package__}.axes")


# ---- Prompts from file or textbox: the line syntax ----


def test_a_line_of_options_in_a1111_syntax(host: PluginHost) -> None:
    pf = _module(host, "prompts_file")
    line = (
        '--prompt "a big" red apple --negative_prompt blurry --steps 3 --seed 5 --cfg_scale 6.5 --width 128'
    )
    assert pf.parse_line(line, 1) == {
        "prompt": "a big red apple",
        "negative_prompt": "blurry",
        "steps": 3,
        "seed": 5,
        "cfg_scale": 6.5,
        "width": 128,
    }
    assert pf.parse_line("--do_not_save_samples true --tiling false", 1) == {"save_images": False}
    assert pf.parse_line("a plain -- prompt", 1) == {"prompt": "a plain -- prompt"}
    assert pf.parse_line("--restore_faces true", 1) == {"restore_faces": True}  # A1111's option


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a cat\n\n--prompt dog --sizes 3", "line 3: unknown option --sizes"),
        ("--steps many", "line 1: --steps: 'many' is not a number"),
        ("cat\n--steps", "line 2: --steps needs a value"),
        ("--tiling true", "line 1: --tiling: tiling is not supported"),
        ("--outpath_samples /tmp", "output folders"),
        ("--prompt 'unclosed", "line 1: No closing quotation"),
        ("--steps 0", "line 1: steps:"),  # the request's own check, named by the line
        ("--sampler_name Nope", "line 1: sampler_name"),
        ("", "at least one prompt"),
    ],
)
def test_bad_lines_are_named_by_number(host: PluginHost, text: str, message: str) -> None:
    pf = _module(host, "prompts_file")
    a = {
        "checkbox_iterate": False,
        "checkbox_iterate_batch": False,
        "prompt_position": "start",
        "prompt_txt": text,
    }
    with pytest.raises(RequestError, match=message) as e:
        pf.plan(Txt2ImgRequest(**BASE), a, None)  # type: ignore[arg-type]
    assert e.value.field == "prompt_txt"


def test_seeds_and_prompt_position(host: PluginHost) -> None:
    pf = _module(host, "prompts_file")
    base = Txt2ImgRequest(**{**BASE, "seed": -1, "batch_size": 2})  # type: ignore[arg-type]
    a = {"checkbox_iterate": True, "checkbox_iterate_batch": False, "prompt_position": "end"}
    jobs = pf.plan(base, {**a, "prompt_txt": "green\n--prompt blue --seed 3\nred"}, None)
    assert [j.prompt for j in jobs] == ["a red apple green", "a red apple blue", "a red apple red"]
    s = jobs[0].seed
    assert s >= 0 and [j.seed for j in jobs] == [s, 3, s + 4]  # iterate: + batch size x count a line
    same = pf.plan(
        base, {**a, "checkbox_iterate": False, "checkbox_iterate_batch": True, "prompt_txt": "a\nb"}, None
    )
    assert same[0].seed == same[1].seed >= 0
    fresh = pf.plan(base, {**a, "checkbox_iterate": False, "prompt_txt": "a\nb"}, None)
    assert [j.seed for j in fresh] == [-1, -1]  # drawn anew for every line


# ---- Prompt matrix ----


def test_prompt_matrix_combinations_in_a1111_order(host: PluginHost) -> None:
    pm = _module(host, "prompt_matrix")
    assert pm.combinations("a cat | red | hat", False, ", ") == [
        "a cat",
        "a cat, red",
        "a cat, hat",
        "a cat, red, hat",
    ]
    assert pm.combinations("a cat|red|hat", True, " ") == ["a cat", "red a cat", "hat a cat", "red hat a cat"]


def test_prompt_matrix_grid_from_real_images(host: PluginHost, engine: Engine) -> None:
    _, spec = host.scripts()["Prompt matrix"]
    runs: list[Any] = []

    def runner(request: Any) -> Any:
        runs.append(request)
        return engine.run(request)

    request = Txt2ImgRequest(**{**BASE, "prompt": "an apple | red | on a table", "seed": -1})  # type: ignore[arg-type]
    out = spec.run(runner, request, {"different_seeds": True, "margin_size": 6})
    assert [r.prompt for r in runs] == [
        "an apple",
        "an apple, red",
        "an apple, on a table",
        "an apple, red, on a table",
    ]
    seeds = [r.seed for r in runs]
    assert seeds[0] >= 0 and seeds == [seeds[0] + i for i in range(4)]
    assert len(out.cells) == 4 and out.grid_path is not None and "txt2img-grids" in str(out.grid_path)
    # 2 x 2 cells of 64 px with 6 px margins, a label band above and a margin on the left
    assert out.grid.width > 2 * 64 + 6 and out.grid.height > 2 * 64 + 6
    grid = np.asarray(out.grid)
    last = np.asarray(out.cells[3].images[0].image)
    h, w = grid.shape[:2]
    assert np.array_equal(grid[h - 64 :, w - 64 :], last)  # the "both parts" cell, bottom right
    assert parse_infotext(out.infotext)["Seed"] == str(seeds[0])
    with pytest.raises(RequestError, match=r"no '\|'") as e:
        spec.run(runner, Txt2ImgRequest(**BASE), {})  # type: ignore[arg-type]
    assert e.value.field == "prompt_type"


def test_prompts_from_file_runs_every_line(host: PluginHost, engine: Engine) -> None:
    _, spec = host.scripts()["Prompts from file or textbox"]
    request = Txt2ImgRequest(**{**BASE, "prompt": ""})  # type: ignore[arg-type]
    text = "a green pear\n--prompt a blue cup --steps 3 --seed 21 --cfg_scale 4"
    out = spec.run(engine.run, request, {"prompt_txt": text})
    assert len(out.cells) == 2
    second = parse_infotext(out.cells[1].images[0].infotext)
    assert second["Prompt"] == "a blue cup" and second["Steps"] == "3" and second["Seed"] == "21"
    assert second["CFG scale"] == "4"
    assert parse_infotext(out.cells[0].images[0].infotext)["Steps"] == "2"


# ---- Outpainting: the matched fill the mk2 script uses ----


def test_matched_fill_keeps_the_original_and_follows_the_picture() -> None:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    out = extend_canvas(img, 16, ("right",), fill="matched", falloff=1.0, color_variation=0.05, seed=1)
    arr = np.asarray(out.image)
    assert np.array_equal(arr[:, :32], np.asarray(img))
    new = arr[:, 32:].astype(float)
    assert abs(new.mean() - np.asarray(img).mean()) < 12  # histogram-matched to the picture's values
    detail = extend_canvas(img, 16, ("right",), fill="matched", falloff=0.0, seed=1).image
    smooth = extend_canvas(img, 16, ("right",), fill="matched", falloff=4.0, seed=1).image

    def roughness(im: Image.Image) -> float:
        a = np.asarray(im)[:, 33:].astype(float).mean(axis=2)
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert roughness(detail) > roughness(smooth)  # lower fall-off exponent = more detail
    grey = np.asarray(extend_canvas(img, 16, ("right",), fill="matched", color_variation=0.0, seed=1).image)
    colour = np.asarray(extend_canvas(img, 16, ("right",), fill="matched", color_variation=1.0, seed=1).image)

    def spread(a: np.ndarray) -> float:  # how far the channels are from each other
        return float(a[:, 32:].astype(float).std(axis=2).mean())

    assert spread(colour) > spread(grey)


# ---- X/Y/Z: the new axes ----


def test_xyz_new_axes_and_limits(host: PluginHost) -> None:
    axes = _xyz_axes(host)
    t2i = Txt2ImgRequest(**{**BASE, "prompt": "a, b, c"})  # type: ignore[arg-type]
    assert axes.parse_values("Size", "64x96, 128x64", t2i, "x_values") == [(64, 96), (128, 64)]
    orders = axes.parse_values("Prompt order", "a, c", t2i, "x_values")
    assert orders == [("a", "c"), ("c", "a")]
    assert axes.AXES["Prompt order"].apply(t2i, ("c", "a")).prompt == "c, b, a"
    assert axes.parse_values("Seed", "-1, 5", t2i, "x_values", fixed_seeds=False) == [-1, 5]
    fixed = axes.parse_values("Var. seed", "-1", t2i, "x_values")
    assert fixed[0] >= 0
    # A1111's indexes: txt2img 5 is Hires steps (needs hires fix), img2img 5 is CFG Scale
    with pytest.raises(RequestError, match="enable_hr"):
        axes.axis_kind(5, t2i, "x_type")
    i2i = Img2ImgRequest(**BASE, init_images=(Image.new("RGB", (64, 64)),))  # type: ignore[arg-type]
    assert axes.axis_kind(5, i2i, "x_type") == "CFG Scale"
    with pytest.raises(RequestError, match="Token merging ratio") as e:  # an axis we do not have
        axes.axis_kind(axes.A1111_TXT2IMG.index("Token merging ratio"), t2i, "y_type")
    assert e.value.field == "y_type"
    # A1111's Face restore axis: a restorer's name, or true/false with the request's own restorer
    assert axes.axis_kind(axes.A1111_TXT2IMG.index("Face restore"), t2i, "y_type") == "Face restore"
    faces = axes.parse_values("Face restore", "gfpgan, CodeFormer, False, yes", t2i, "y_values")
    assert faces == ["GFPGAN", "CodeFormer", "false", "true"]
    applied = [axes.AXES["Face restore"].apply(t2i, v) for v in faces]
    own = t2i.face_restoration_model
    assert [(r.restore_faces, r.face_restoration_model) for r in applied] == [
        (True, "GFPGAN"), (True, "CodeFormer"), (False, own), (True, own)
    ]  # fmt: skip
    with pytest.raises(RequestError, match="Face restore takes") as e:
        axes.parse_values("Face restore", "GFPGAN, Bogus", t2i, "y_values")
    assert e.value.field == "y_values"
    with pytest.raises(RequestError, match="img2img only"):
        axes.axis_kind("Initial noise multiplier", t2i, "x_type")
    for text in ("1-10000", ", ".join(str(i) for i in range(10_000)), "1-2 [10000]"):
        with pytest.raises(RequestError, match="limit 1000") as e:
            axes.parse_values("Steps", text, t2i, "z_values")
        assert e.value.field == "z_values"


def test_xyz_keep_minus_one_vary_seeds_and_grid_infotext(host: PluginHost, engine: Engine) -> None:
    _, spec = host.scripts()["X/Y/Z plot"]
    runs: list[Any] = []

    def runner(request: Any) -> Any:
        runs.append(request)
        return engine.run(request)

    request = Txt2ImgRequest(**{**BASE, "seed": 40, "save_images": False})  # type: ignore[arg-type]
    out = spec.run(
        runner, request, {"x_type": "Steps", "x_values": "1, 2", "vary_seeds_x": True, "margin_size": 4}
    )
    assert [(r.steps, r.seed) for r in runs] == [(1, 40), (2, 41)]
    assert out.captions == ("Steps: 1", "Steps: 2") and not out.lone_images
    info = parse_infotext(out.infotext)
    assert info["Script"] == "X/Y/Z plot" and info["X Type"] == "Steps" and info["X Values"] == "1, 2"
    runs.clear()
    spec.run(runner, Txt2ImgRequest(**{**BASE, "seed": -1, "save_images": False}), {  # type: ignore[arg-type]
        "x_type": "CFG Scale", "x_values": "3, 4", "no_fixed_seeds": True,
    })  # fmt: skip
    assert [r.seed for r in runs] == [-1, -1]  # "Keep -1 for seeds": every cell draws its own


# ---- Over HTTP, as an A1111 client sends them ----


@pytest.fixture(scope="module")
def c(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_server(tiny_data_dir, tmp_path_factory.mktemp("scripts-api")) as running,
        running.client() as client,
    ):
        yield client


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_outpainting_scripts_and_fields_over_the_api(c: httpx.Client) -> None:
    init = _picture()
    body = {**FAST, "init_images": [_b64(init)], "denoising_strength": 0.8}
    mk2 = c.post(
        "/sdapi/v1/img2img",
        json={
            **body,
            "script_name": "Outpainting mk2",
            "script_args": [None, 16, 4, ["left", "up"], 1.0, 0.05],
        },
    )
    assert mk2.status_code == 200, mk2.text
    out = _image(mk2.json()["images"][0])
    assert out.size == (80, 80)
    assert np.array_equal(np.asarray(out)[16:, 16:], np.asarray(init))  # the original, exactly
    text = json.loads(mk2.json()["info"])["infotexts"][0]
    assert "Outpaint fill: matched" in text and "Outpaint fall-off: 1" in text
    poor = c.post(
        "/sdapi/v1/img2img",
        json={**body, "script_name": "Poor man's outpainting", "script_args": [8, 2, 2, ["down"]]},
    )
    assert poor.status_code == 200, poor.text
    info = json.loads(poor.json()["info"])["infotexts"][0]
    assert _image(poor.json()["images"][0]).size == (64, 72)
    assert "Masked content: latent noise" in info and "Outpaint fill: edge" in info
    native = c.post(
        "/sdapi/v1/img2img", json={**body, "outpaint_pixels": 8, "outpaint_directions": ["right"]}
    )
    assert native.status_code == 200, native.text
    assert _image(native.json()["images"][0]).size == (72, 64)  # no longer dropped silently
    for args, field in (
        ([None, 16, 4, ["sideways"]], "script_args.direction"),
        ([None, 300], "script_args.pixels"),
    ):
        bad = c.post(
            "/sdapi/v1/img2img", json={**body, "script_name": "Outpainting mk2", "script_args": args}
        )
        assert bad.status_code == 422 and field in bad.text, bad.text
    bad = c.post("/sdapi/v1/img2img", json={**body, "outpaint_fill": "smear", "outpaint_pixels": 8})
    assert bad.status_code == 422 and "outpaint_fill" in bad.text
    on_txt2img = c.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "Outpainting mk2"})
    assert on_txt2img.status_code == 422 and "script_name" in on_txt2img.text


def test_prompt_scripts_over_the_api(c: httpx.Client) -> None:
    pm = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "prompt": "a cube | red", "script_name": "Prompt matrix",
              "script_args": [False, False, "positive", "comma", 0]},
    )  # fmt: skip
    assert pm.status_code == 200, pm.text
    info = json.loads(pm.json()["info"])
    assert len(pm.json()["images"]) == 1 + 2 and info["index_of_first_image"] == 1
    assert [t.split("\n")[0] for t in info["infotexts"][1:]] == ["a cube", "a cube, red"]
    pf = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "prompt": "", "script_name": "prompts from file or textbox",
              "script_args": [False, False, "start", "one\n--prompt two --steps 3 --seed 9"]},
    )  # fmt: skip
    assert pf.status_code == 200, pf.text
    info = json.loads(pf.json()["info"])
    assert len(pf.json()["images"]) == 2 and info["all_seeds"][1] == 9
    bad = c.post(
        "/sdapi/v1/txt2img",
        json={**FAST, "script_name": "Prompts from file or textbox",
              "script_args": [False, False, "start", "one\n--prompt two --colour red"]},
    )  # fmt: skip
    assert bad.status_code == 422
    assert "script_args.prompt_txt" in bad.text and "line 2" in bad.text and "--colour" in bad.text


def test_xyz_a1111_layout_with_too_many_values_is_refused(c: httpx.Client) -> None:
    args = [4, "1-10000", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot", "script_args": args})
    assert r.status_code == 422 and "script_args.x_values" in r.text and "limit 1000" in r.text


def test_the_gallery_shows_captions_and_hides_cells_when_asked(tmp_path: Path) -> None:
    from webui.core.types import GeneratedImage, GenerationResult
    from webui.ui.script_ui import result_frame

    picture = Image.new("RGB", (8, 8))
    cells = tuple(
        GenerationResult(None, (GeneratedImage(picture, seed, 0, f"s{seed}"),), "m") for seed in (1, 2)
    )

    class Plot:  # the shape X/Y/Z plot returns
        grid = picture
        grid_path = None
        infotext = "grid text"
        interrupted = False
        captions = ("Steps: 1", "Steps: 2")
        lone_images = True
        sub_grids = ()

    Plot.cells = cells  # type: ignore[attr-defined]
    shown = result_frame(Plot())
    assert [c for _, c in shown.gallery] == ["grid", "Steps: 1 (seed 1)", "Steps: 2 (seed 2)"]
    Plot.lone_images = False
    hidden = result_frame(Plot())
    assert [c for _, c in hidden.gallery] == ["grid"] and "grid and 2 images" in hidden.status


def _xyz_args(x_type: Any, x_values: str, y_type: Any = 0, y_values: str = "") -> list[Any]:
    """A1111 1.10's X/Y/Z script_args, with Include sub images on."""
    return [
        x_type,
        x_values,
        [],
        y_type,
        y_values,
        [],
        0,
        "",
        [],
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        0,
        False,
    ]


def test_xyz_extension_axis_over_the_api(c: httpx.Client) -> None:
    body = {**FAST, "prompt": "a {red|green|blue} cube", "script_name": "X/Y/Z plot"}
    r = c.post(
        "/sdapi/v1/txt2img", json={**body, "script_args": _xyz_args("wildcards.enabled", "true, false")}
    )
    assert r.status_code == 200, r.text
    texts = json.loads(r.json()["info"])["infotexts"]
    assert texts[1].split("\n")[0] in ("a red cube", "a green cube", "a blue cube")  # expanded
    assert texts[2].startswith("a {red|green|blue} cube")  # left as written
    bad = c.post("/sdapi/v1/txt2img", json={**body, "script_args": _xyz_args("wildcards.enabled", "maybe")})
    assert bad.status_code == 422 and "script_args.x_values" in bad.text
    nope = c.post("/sdapi/v1/txt2img", json={**body, "script_args": _xyz_args("wildcards.nope", "1")})
    assert nope.status_code == 422 and "script_args.x_type" in nope.text


def test_xyz_on_an_inpaint_request_with_a1111_indexes(c: httpx.Client) -> None:
    init = _picture()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    # img2img list: 3 Var. strength; "Denoising" and "Size" by name
    body = {
        **FAST,
        "init_images": [_b64(init)],
        "mask": _b64(mask),
        "mask_blur": 0,
        "inpaint_full_res": False,
        "script_name": "X/Y/Z plot",
        "script_args": _xyz_args("Denoising", "0.3, 0.9", "Size", "64x64, 64x96"),
    }
    r = c.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    pictures = [_image(b) for b in r.json()["images"]]
    assert len(pictures) == 1 + 4
    assert [p.size for p in pictures[1:]] == [(64, 64), (64, 64), (64, 96), (64, 96)]
    strengths = [parse_infotext(t)["Denoising strength"] for t in info["infotexts"][1:]]
    assert strengths == ["0.3", "0.9", "0.3", "0.9"]
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(pictures[1])[keep], np.asarray(init)[keep])  # still an inpaint
    grid_info = parse_infotext(info["infotexts"][0])
    assert grid_info["X Type"] == "Denoising" and grid_info["Y Type"] == "Size"
    var = c.post("/sdapi/v1/img2img", json={**body, "script_args": _xyz_args(3, "0, 0.5")})
    assert var.status_code == 200, var.text
    assert "Variation seed strength: 0.5" in json.loads(var.json()["info"])["infotexts"][2]
