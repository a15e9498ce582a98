"""The detailer's "Detailer" accordion on txt2img, img2img and Inpaint (no browser): its fields, its
values reaching the extension as one ADetailer unit, and PNG Info / reuse reading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from webui.api.services import ServerOptions, Services
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.outputs.infotext import format_infotext
from webui.core.outputs.saving import save_image
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost
from webui.ui.extension_sections import build_sections, field_key, infotext_values
from webui.ui.pnginfo_tab import read_image
from webui.ui.sendto import field_updates, tab_field_names

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

KINDS = {
    "enable": "Checkbox", "ad_model": "Dropdown", "ad_prompt": "Textbox", "ad_negative_prompt": "Textbox",
    "ad_confidence": "Slider", "ad_denoising_strength": "Slider", "ad_mask_blur": "Slider",
    "ad_dilate_erode": "Slider", "ad_inpaint_only_masked": "Checkbox",
    "ad_inpaint_only_masked_padding": "Slider", "ad_controlnet_model": "Dropdown",
    "ad_controlnet_module": "Dropdown", "ad_controlnet_weight": "Slider",
    "ad_controlnet_guidance_start": "Slider", "ad_controlnet_guidance_end": "Slider",
}  # fmt: skip


class _Ctx:
    def __init__(self, services: Services) -> None:
        self.services = services


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> _Ctx:
    data = tmp_path_factory.mktemp("ad-ui")
    config = AppConfig.for_data_dir(data, cache_dir=data / "cache")
    engine = Engine(config, None, PluginHost.for_config(config, include_pip=False))
    return _Ctx(Services(config, engine, engine.manager, None, None, ServerOptions(cmd_flags={})))


@pytest.mark.parametrize("tab", ["txt2img", "img2img", "inpaint"])
def test_the_detailer_accordion_has_adetailers_main_fields(ctx: _Ctx, tab: str) -> None:
    with gr.Blocks() as demo:
        inputs = build_sections(ctx, tab)
    mine = {k.rsplit(".", 1)[1]: type(c).__name__ for k, c in inputs.components.items() if ".detailer." in k}
    assert mine == KINDS
    model = inputs.components[field_key("detailer", "ad_model")]
    assert ("opencv_face", "opencv_face") in model.choices or "opencv_face" in model.choices
    titles = [b.label for b in demo.blocks.values() if isinstance(b, gr.Accordion)]
    assert "Detailer" in titles


def test_accordion_values_become_one_unit_and_bad_ones_name_the_field(ctx: _Ctx) -> None:
    with gr.Blocks():
        inputs = build_sections(ctx, "txt2img")
    values: dict[str, Any] = {k: f.default for k, f in inputs.fields.items()}
    values[field_key("detailer", "enable")] = True
    values[field_key("detailer", "ad_model")] = "opencv_face"
    values[field_key("detailer", "ad_mask_blur")] = 8.0
    args = inputs.args(values)
    assert args["detailer"]["ad_mask_blur"] == 8 and args["detailer"]["enable"] is True
    host = ctx.services.engine.hooks
    request = host.request_received(Txt2ImgRequest(prompt="x", extension_args=args))
    assert host.extra_infotext(request)["ADetailer model"] == "opencv_face"
    assert host.extra_infotext(request)["ADetailer mask blur"] == 8
    values[field_key("detailer", "ad_model")] = "nope.onnx"
    with pytest.raises(RequestError) as bad:
        inputs.args(values)
    assert bad.value.field == "extension_args.detailer.ad_model"


def test_png_info_and_reuse_put_the_units_values_back_in_the_accordion(ctx: _Ctx, tmp_path: Path) -> None:
    host = ctx.services.engine.hooks
    unit = {"enable": True, "ad_model": "opencv_face", "ad_prompt": "sharp eyes", "ad_mask_blur": 9}
    request = host.request_received(Txt2ImgRequest(prompt="x", extension_args={"detailer": unit}))
    params = {"Steps": 20, "Sampler": "Euler", "Seed": 5, **host.extra_infotext(request)}
    text = format_infotext("a face", "", params)
    path = save_image(Image.new("RGB", (16, 16)), tmp_path, 5, text)
    summary, _, _, fields = read_image(ctx, str(path))  # type: ignore[arg-type]
    assert fields["prompt"] == "a face" and fields["steps"] == 20, summary
    assert fields[field_key("detailer", "enable")] is True
    assert fields[field_key("detailer", "ad_model")] == "opencv_face"
    assert fields[field_key("detailer", "ad_prompt")] == "sharp eyes"
    assert fields[field_key("detailer", "ad_mask_blur")] == 9
    with gr.Blocks():
        inputs = build_sections(ctx, "txt2img")
        tab = {"prompt": gr.Textbox(), "_gallery": gr.Gallery(), **inputs.components}
    names = tab_field_names(tab)
    assert "_gallery" not in names and field_key("detailer", "ad_model") in names
    updates = dict(zip(names, field_updates(tab, fields), strict=True))
    assert updates["prompt"] == "a face" and updates[field_key("detailer", "ad_model")] == "opencv_face"
    assert updates[field_key("detailer", "ad_confidence")] == 0.3  # written by ADetailer, read back
    plain = infotext_values(host, format_infotext("a face", "", {"Steps": 20, "Sampler": "Euler", "Seed": 5}))
    detailer = {k: v for k, v in plain.items() if k.startswith(field_key("detailer", ""))}
    assert detailer == {field_key("detailer", "enable"): False}  # pasting a plain image turns it off
    assert plain[field_key("controlnet", "enabled")] is False  # and the ControlNet unit too


def test_adetailer_args_in_a_native_job_are_checked_naming_the_unit_field(ctx: _Ctx) -> None:
    host = ctx.services.engine.hooks
    raw = [True, False, {"ad_model": "opencv_face"}, {"ad_model": "opencv_face", "ad_confidence": 2}]
    with pytest.raises(RequestError) as bad:
        host.request_received(Txt2ImgRequest(prompt="x", extension_args={"detailer": {"_adetailer": raw}}))
    assert bad.value.field == "extension_args.detailer._adetailer[3].ad_confidence"
    assert "2nd unit" in bad.value.message
