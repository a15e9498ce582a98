"""The studio's extension parts without a browser: accordion values -> extension_args, the Script
dropdown's values, the Extensions tab's actions (list, enable/disable, install guard, install/update from
a local git repo) and the hires upscaler list. Real PluginHosts over throw-away extension folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from tests.test_plugins_host import BROKEN, write_extension
from tests.test_plugins_sources import _git
from webui.api.services import ServerOptions, Services
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.types import GeneratedImage, GenerationResult, RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost
from webui.ui.extension_sections import ExtensionInputs, build_sections, field_key
from webui.ui.extensions_tab import RESTART, ExtensionsPanel
from webui.ui.script_ui import NONE, SCRIPT_KEY, build_scripts, result_frame

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

ALL_KINDS = """
from PIL import Image
from webui.plugins.api import Field, ScriptSpec, UiSection, UpscalerSpec, hookimpl

@hookimpl
def register(registry):
    registry.add(UiSection(("txt2img", "img2img"), "All kinds", fields=(
        Field("flag", "checkbox", False),
        Field("steps", "slider", 4, minimum=1, maximum=10),
        Field("scale", "number", 1.5, minimum=0.0),
        Field("word", "text", "cat"),
        Field("notes", "textarea", ""),
        Field("size", "dropdown", "small", choices=("small", "large")),
        Field("side", "radio", "left", choices=("left", "right")),
        Field("upscaler", "upscaler", "None"),
    )))
    registry.add(UiSection("txt2img", "Only txt2img", fields=(Field("only", "checkbox", True),)))
    registry.add(UpscalerSpec("Tiny 2x", lambda im, w, h: im.resize((w, h))))
    registry.add(ScriptSpec("Echo", lambda runner, request, args: args, fields=(
        Field("times", "slider", 2, minimum=1, maximum=5, step=1),
        Field("mode", "dropdown", "a", choices=("a", "b")),
    )))
"""


def _config(data: Path, **kw: Any) -> AppConfig:
    return AppConfig.for_data_dir(data, cache_dir=data / "cache", **kw)


def _services(data: Path, flags: dict[str, Any] | None = None, **config_kw: Any) -> Services:
    config = _config(data, **config_kw)
    host = PluginHost.for_config(config, builtin_dir=data / "no-builtins", include_pip=False)
    engine = Engine(config, None, host)
    return Services(config, engine, engine.manager, None, None, ServerOptions(cmd_flags=flags or {}))


class _Ctx:
    def __init__(self, services: Services) -> None:
        self.services = services


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_extension(tmp_path / "extensions", "kinds", ALL_KINDS)
    write_extension(tmp_path / "extensions", "broken", BROKEN)
    return tmp_path


def test_sections_render_each_field_kind_and_their_values_reach_extension_args_by_name(data: Path) -> None:
    ctx = _Ctx(_services(data))
    with gr.Blocks():
        txt = build_sections(ctx, "txt2img")
        inpaint = build_sections(ctx, "inpaint")
    kinds = {key.rsplit(".", 1)[1]: type(c).__name__ for key, c in txt.components.items()}
    assert kinds == {
        "flag": "Checkbox", "steps": "Slider", "scale": "Number", "word": "Textbox", "notes": "Textbox",
        "size": "Dropdown", "side": "Radio", "upscaler": "Dropdown", "only": "Checkbox",
    }  # fmt: skip
    # an "upscaler" field lists the engine's picture upscalers, the extension's included (Extras' list)
    upscaler = txt.components[field_key("kinds", "upscaler")]
    assert [c[0] for c in upscaler.choices] == ["None", "Lanczos", "Nearest", "Tiny 2x"]
    assert upscaler.value == "None"
    assert txt.components[field_key("kinds", "notes")].lines == 4
    assert field_key("kinds", "only") not in inpaint.components  # inpaint shows the img2img sections
    assert field_key("kinds", "flag") in inpaint.components
    values = {key: f.default for key, f in txt.fields.items()}
    values.update({field_key("kinds", "steps"): 7.0, field_key("kinds", "side"): "right", "prompt": "x"})
    values[field_key("kinds", "upscaler")] = "Tiny 2x"
    args = txt.args(values)
    assert args == {
        "kinds": {
            "flag": False, "steps": 7, "scale": 1.5, "word": "cat", "notes": "", "size": "small",
            "side": "right", "upscaler": "Tiny 2x", "only": True,
        }
    }  # fmt: skip
    assert isinstance(args["kinds"]["steps"], int)
    assert txt.extra(values) == {"extension_args": args}
    request = Txt2ImgRequest(prompt="x", extension_args=args)
    assert ctx.services.engine.hooks.args_for("kinds", request)["side"] == "right"


def test_a_bad_accordion_value_names_the_extension_and_field(data: Path) -> None:
    ctx = _Ctx(_services(data))
    with gr.Blocks():
        txt = build_sections(ctx, "txt2img")
    with pytest.raises(RequestError) as bad:
        txt.args({field_key("kinds", "size"): "huge"})
    assert bad.value.field == "extension_args.kinds.size"
    with pytest.raises(RequestError) as big:
        txt.args({field_key("kinds", "steps"): 11})
    assert big.value.field == "extension_args.kinds.steps"
    with pytest.raises(RequestError) as unknown:  # checked against the live list, as a job's values are
        ctx.services.engine.hooks.check_extension_args({"kinds": {"upscaler": "R-ESRGAN 4x+"}})
    assert unknown.value.field == "extension_args.kinds.upscaler"
    assert "'R-ESRGAN 4x+'" in unknown.value.message
    assert "None, Lanczos, Nearest, Tiny 2x" in unknown.value.message
    assert ExtensionInputs(None).args({}) == {}


def test_script_dropdown_lists_the_tabs_scripts_and_checks_their_values(data: Path) -> None:
    ctx = _Ctx(_services(data))
    with gr.Blocks():
        scripts = build_scripts(ctx, "txt2img")
    dropdown = scripts.components[SCRIPT_KEY]
    assert [c[0] for c in dropdown.choices] == [NONE, "Echo"]
    assert scripts.selected({SCRIPT_KEY: NONE}) is None
    spec, args = scripts.selected({SCRIPT_KEY: "Echo", "_script.Echo.times": 3.0}) or (None, None)
    assert spec.name == "Echo" and args == {"times": 3, "mode": "a"}
    with pytest.raises(RequestError) as bad:
        scripts.selected({SCRIPT_KEY: "Echo", "_script.Echo.mode": "c"})
    assert bad.value.field == "script_args.mode"
    with pytest.raises(RequestError, match="unknown script"):
        scripts.selected({SCRIPT_KEY: "Nope"})


def test_a_script_result_fills_the_gallery_grid_first(tmp_path: Path) -> None:
    request = Txt2ImgRequest(prompt="p")
    cells = []
    for seed, colour in ((1, "red"), (2, "blue")):
        path = tmp_path / f"{seed}.png"
        Image.new("RGB", (8, 8), colour).save(path)
        image = GeneratedImage(Image.open(path), seed, seed, f"p\nSeed: {seed}", path)
        cells.append(GenerationResult(request, (image,), "m"))

    class Plot:  # the shape X/Y/Z plot returns
        grid = Image.new("RGB", (16, 8))
        grid_path = None
        infotext = "p\nSeed: 1"
        interrupted = False

    Plot.cells = (cells[0], cells[1])  # type: ignore[attr-defined]
    frame = result_frame(Plot())
    assert frame.done and frame.gallery is not None and len(frame.gallery) == 3
    assert frame.gallery[0][1] == "grid" and isinstance(frame.gallery[0][0], Image.Image)
    assert [g[0] for g in frame.gallery[1:]] == [str(tmp_path / "1.png"), str(tmp_path / "2.png")]
    assert frame.infotexts == ["p\nSeed: 1", "p\nSeed: 1", "p\nSeed: 2"]
    assert frame.seeds == [1, 1, 2]
    assert "grid and 2 images" in frame.status
    assert [g[1] for g in frame.gallery[1:]] == ["seed 1", "seed 2"]
    Plot.captions = ("Steps: 10, CFG Scale: 7", "Steps: 20, CFG Scale: 7")  # type: ignore[attr-defined]
    captions = [g[1] for g in result_frame(Plot()).gallery[1:]]  # type: ignore[index]
    assert captions == ["Steps: 10, CFG Scale: 7 (seed 1)", "Steps: 20, CFG Scale: 7 (seed 2)"]


def test_extensions_panel_lists_errors_and_persists_enable_state(data: Path) -> None:
    panel = ExtensionsPanel(_services(data))
    rows = {r[0]: r for r in panel.rows()}
    assert rows["broken"][2] == "failed" and "sfumato_module_that_does_not_exist" in rows["broken"][5]
    assert rows["kinds"][2:5] == ["loaded", "yes", "user"]
    assert RESTART in panel.set_enabled("kinds", False)
    assert json.loads((data / "extensions.json").read_text()) == {"disabled": ["kinds"]}
    assert RESTART in {r[0]: r for r in panel.rows()}["kinds"][3]
    assert panel.set_enabled("no-such", True).startswith("Choose")
    panel.set_enabled("kinds", True)
    assert {r[0]: r for r in panel.rows()}["kinds"][3] == "yes"


def test_install_is_refused_when_others_can_reach_the_server(data: Path) -> None:
    for flags, kw in (({}, {"listen": True}), ({"share": True}, {}), ({}, {"server_name": "10.0.0.2"})):
        panel = ExtensionsPanel(_services(data, flags, **kw))
        refusal = panel.install_refusal()
        assert refusal is not None and "--enable-insecure-extension-access" in refusal
        assert panel.install("https://example.invalid/x.git") == refusal
        assert panel.update("kinds") == refusal
    allowed = ExtensionsPanel(_services(data, {"enable_insecure_extension_access": True}, listen=True))
    assert allowed.install_refusal() is None
    assert "not a git URL" in allowed.install("not a url")


def test_install_and_update_from_a_local_git_repo(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    src = tmp_path_factory.mktemp("src")
    work = write_extension(src, "gitext", "from webui.plugins.api import hookimpl\n")
    for args in (("init", "-q"), ("add", "."), ("commit", "-q", "-m", "one")):
        _git(*args, cwd=work)
    panel = ExtensionsPanel(_services(data))
    message = panel.install(f"file://{work}", "")
    assert message.startswith("Installed into") and RESTART in message
    assert (data / "extensions" / "gitext" / "extension.toml").is_file()
    reloaded = ExtensionsPanel(_services(data))
    assert "gitext" in reloaded.names()
    (work / "NEWS").write_text("two\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "two", cwd=work)
    head = _git("rev-parse", "HEAD", cwd=work).strip()
    assert reloaded.update("gitext") == f"gitext is now at {head[:10]}: {RESTART}."
    assert "is not a git-installed extension" in reloaded.update("kinds")


def test_hires_upscaler_dropdown_lists_builtin_and_extension_upscalers(data: Path) -> None:
    from webui.flags import parse_flags
    from webui.server import build_options, build_services
    from webui.ui.studio import build_studio

    write_extension(data / "extensions", "kinds", ALL_KINDS)
    config = AppConfig.for_data_dir(data, cache_dir=data / "cache", outputs_dir=data / "out")
    services = build_services(config, build_options(parse_flags([])), db_path=data / "jobs.sqlite")
    studio = build_studio(services, secret="x" * 32)
    found = {
        getattr(b, "elem_id", None): b for b in studio.blocks.blocks.values() if getattr(b, "elem_id", None)
    }
    choices = [c[0] for c in found["txt2img_hr_upscaler"].choices]
    assert choices == services.engine.upscaler_names() and "Tiny 2x" in choices and "Latent" in choices
    assert "txt2img_ext_kinds" in found and "img2img_ext_kinds" in found and "inpaint_ext_kinds" in found
    assert "txt2img_script" in found and "tab_extensions" in found
    # the Script dropdown is on the Inpaint tab too, with the img2img scripts (outpainting included)
    inpaint = [c[0] for c in found["inpaint_script"].choices]
    assert "X/Y/Z plot" in inpaint and "Outpainting mk2" in inpaint and "Prompt matrix" in inpaint
    assert "Outpainting mk2" not in [c[0] for c in found["txt2img_script"].choices]
    assert "inpaint_script_x_y_z_plot_no_fixed_seeds" in found  # "Keep -1 for seeds"
    # SD upscale's upscaler lists the studio's picture upscalers, the extension's included (Extras' list)
    for tab in ("txt2img", "img2img", "inpaint"):
        upscalers = [c[0] for c in found[f"{tab}_script_sd_upscale_upscaler_index"].choices]
        assert upscalers == ["None", "Lanczos", "Nearest", "Tiny 2x"]
        assert upscalers == [c[0] for c in found["extras_upscaler_1"].choices]


IMAGES = """
from webui.plugins.api import Field, UiSection, hookimpl

@hookimpl
def register(registry):
    registry.add(UiSection("img2img", "Pictures", fields=(
        Field("hint", "image", None), Field("area", "mask", None), Field("weight", "slider", 1.0),
    )))
"""


def test_image_and_mask_fields_are_image_drops_and_reach_the_hooks_as_pil(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "pics", IMAGES, api_version="2.0")
    ctx = _Ctx(_services(tmp_path))
    with gr.Blocks():
        inpaint = build_sections(ctx, "inpaint")
    hint, area = inpaint.components[field_key("pics", "hint")], inpaint.components[field_key("pics", "area")]
    assert isinstance(hint, gr.Image) and isinstance(area, gr.Image)
    assert (hint.type, hint.image_mode, area.image_mode) == ("pil", "RGB", "L")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent: white, as an init image would be
    args = inpaint.args({field_key("pics", "hint"): rgba, field_key("pics", "area"): None})
    assert args["pics"]["area"] is None
    assert args["pics"]["hint"].mode == "RGB" and args["pics"]["hint"].getpixel((0, 0)) == (255, 255, 255)
    huge = Image.new("L", (8000, 6000))
    with pytest.raises(RequestError) as bad:
        inpaint.args({field_key("pics", "area"): huge})
    assert bad.value.field == "extension_args.pics.area" and "pixels" in bad.value.message


def test_extension_settings_sections_and_requirements_show_in_their_tabs(tmp_path: Path) -> None:
    import shutil

    from tests.test_plugins_api2 import FIXTURES
    from webui.core.settings import SettingsStore
    from webui.ui.context import StudioContext
    from webui.ui.settings_tab import build_settings, edits, extension_value

    shutil.copytree(FIXTURES / "residual_probe", tmp_path / "extensions" / "residual_probe")
    services = _services(tmp_path)
    services.settings = SettingsStore(tmp_path / "config.json")
    services.engine.hooks.attach_settings(services.settings.get)
    with gr.Blocks():
        parts = build_settings(StudioContext(services, secret="s"))
    control = parts["_controls"]["residual_probe.scale"]
    assert isinstance(control, gr.Slider) and (control.minimum, control.maximum) == (0.0, 4.0)
    field = services.engine.hooks.setting_fields()["residual_probe.scale"]
    keys = ["residual_probe.scale", "jpeg_quality"]
    loaded = {"residual_probe.scale": 1.0, "jpeg_quality": 80}
    assert edits(keys, loaded, [2.5, 80], {"residual_probe.scale": field}) == {"residual_probe.scale": 2.5}
    with pytest.raises(RequestError) as bad:
        edits(keys, loaded, [7.0, 80], {"residual_probe.scale": field})
    assert bad.value.field == "residual_probe.scale"
    assert extension_value(field, "residual_probe.scale", "junk") == 1.0  # unusable stored value: default
    services.settings.update({"residual_probe.scale": 2.0})
    assert services.engine.hooks.settings_for("residual_probe") == {"scale": 2.0}
    rows = {r[0]: r for r in ExtensionsPanel(services).rows()}
    needs = rows["residual_probe"][7]
    assert "pillow>=1: installed " in needs and "sfumato-no-such-package==1.0: missing" in needs
