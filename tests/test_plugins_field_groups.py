"""Plugin API 2.1: field groups drawn as tabs inside an accordion (each with its own Preview), and the
settings stored in config.json reaching `register` (how many unit tabs the ControlNet accordion has)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from tests.test_plugins_host import write_extension
from tests.test_ui_extensions import _Ctx, _services
from webui.core.config import AppConfig
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost
from webui.ui.extension_sections import build_sections, field_key, run_preview

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

GROUPS = """
from PIL import Image
from webui.plugins.api import Field, SettingsSection, UiSection, hookimpl

SEEN = []

@hookimpl
def register(registry, settings):
    count = settings.get("count", 2)
    count = count if isinstance(count, int) and 1 <= count <= 4 else 2
    fields = (Field("on", "checkbox", True),)
    for i in range(count):
        fields += (Field(f"size{i}", "slider", 8, minimum=1, maximum=64, group=f"Part {i}"),)
    def preview(values):
        SEEN.append(dict(values))
        return Image.new("L", (4, 4))
    registry.add(UiSection("txt2img", "Parts", fields=fields, preview=preview))
    registry.add(SettingsSection("Parts", fields=(Field("count", "slider", 2, minimum=1, maximum=4),)))
"""


def _write_config(data: Path, values: dict[str, Any]) -> None:
    (data / "config.json").write_text(json.dumps(values), encoding="utf-8")


def _blocks(ctx: Any) -> tuple[Any, dict[str, Any]]:
    with gr.Blocks() as demo:
        inputs = build_sections(ctx, "txt2img")
    return inputs, {getattr(b, "elem_id", None): b for b in demo.blocks.values()}


def test_groups_are_tabs_with_their_own_preview_and_values_stay_by_name(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "parts", GROUPS, api_version="2.1")
    _write_config(tmp_path, {"parts.count": 3})
    ctx = _Ctx(_services(tmp_path))
    inputs, found = _blocks(ctx)
    assert [found[f"txt2img_ext_parts_part_{i}"].label for i in range(3)] == ["Part 0", "Part 1", "Part 2"]
    assert all(type(found[f"txt2img_ext_parts_part_{i}"]).__name__ == "Tab" for i in range(3))
    assert "txt2img_ext_parts_part_3" not in found and "txt2img_ext_parts_preview_button" not in found
    assert all(f"txt2img_ext_parts_part_{i}_preview_button" in found for i in range(3))
    values = {key: f.default for key, f in inputs.fields.items()}
    values[field_key("parts", "size2")] = 30.0
    assert inputs.args(values) == {"parts": {"on": True, "size0": 8, "size1": 8, "size2": 30}}
    host = ctx.services.engine.hooks
    ((_, section),) = host.ui_sections("txt2img")
    group = [f for f in section.fields if f.group in ("", "Part 1")]
    shown = run_preview(host, "parts", section, True, 12.0, fields=group)
    assert isinstance(shown, Image.Image)
    assert host.extension("parts").module.SEEN == [{"on": True, "size1": 12}]  # that tab's values only


def test_register_sees_the_stored_settings_raw_and_a_broken_file_changes_nothing(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "parts", GROUPS, api_version="2.1")
    for stored, count in (({"parts.count": 1, "other.count": 4}, 1), ({"parts.count": "many"}, 2), ({}, 2)):
        _write_config(tmp_path, stored)
        host = PluginHost.for_config(AppConfig.for_data_dir(tmp_path), builtin_dir=tmp_path / "none")
        assert [f.name for f in host.ui_fields("parts")] == ["on", *(f"size{i}" for i in range(count))]
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    host = PluginHost.for_config(AppConfig.for_data_dir(tmp_path), builtin_dir=tmp_path / "none")
    assert len(host.ui_fields("parts")) == 3
    assert (tmp_path / "config.json").read_text(encoding="utf-8") == "{not json"  # left for the store


# ---- the ControlNet accordion ------------------------------------------------------------------------


def _controlnet_host(data: Path, stored: dict[str, Any]) -> PluginHost:
    _write_config(data, stored)
    return PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)


def test_controlnet_unit_tabs_follow_the_setting_and_each_tab_is_a_unit(tmp_path: Path) -> None:
    from tests.test_ext_controlnet import drawing

    host = _controlnet_host(tmp_path, {})
    names = [f.name for f in host.ui_fields("controlnet")]
    assert "enabled" in names and "unit1_image" in names and "unit2_weight" in names
    assert "unit3_enabled" not in names
    assert {f.group for f in host.ui_fields("controlnet")} == {f"ControlNet Unit {i}" for i in range(3)}
    assert host.settings_for("controlnet") == {"unit_count": 3}
    five = _controlnet_host(tmp_path, {"controlnet.unit_count": 5})
    assert "unit4_enabled" in {f.name for f in five.ui_fields("controlnet")}
    one = _controlnet_host(tmp_path, {"controlnet.unit_count": 1})
    assert {f.group for f in one.ui_fields("controlnet")} == {""}  # a single unit: no tabs

    # tabs 0 and 2 enabled (1 off): two units, with their own indices
    args = {
        "enabled": True, "image": drawing((64, 64)), "module": "invert", "model": "None",
        "unit2_enabled": True, "unit2_image": drawing((64, 64)), "unit2_module": "canny", "unit2_weight": 0.5,
    }  # fmt: skip
    checked = host.check_extension_args({"controlnet": args})["controlnet"]
    ui_units = host.extension("controlnet").module.ui_units  # type: ignore[union-attr]
    units = ui_units(host.args_for("controlnet", Txt2ImgRequest(extension_args={"controlnet": checked})))
    assert [(u["index"], u["module"], u["weight"]) for u in units] == [(0, "invert", 1.0), (2, "canny", 0.5)]
    # a bad value of a tab's unit is refused naming that tab's field
    for bad, field in (({}, "model"), ({"enabled": False}, "unit2_model")):  # no model chosen in the tab
        request = Txt2ImgRequest(extension_args=host.check_extension_args({"controlnet": {**args, **bad}}))
        with pytest.raises(RequestError) as e:
            host.request_received(request)
        assert e.value.field == f"extension_args.controlnet.{field}", e.value
