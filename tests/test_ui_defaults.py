"""ui-config.json (A1111's UI defaults), ui-users.json (each user's theme) and quicksettings_list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from webui.core import ui_defaults
from webui.core.settings import QUICKSETTINGS_DEFAULT, Settings
from webui.core.types import RequestError
from webui.core.ui_defaults import Control, load, parse, save_values
from webui.core.user_prefs import UserPrefsStore

STEPS = Control("txt2img/Sampling steps", "slider", 20, 1, 150, 1)
WIDTH = Control("txt2img/Width", "slider", 512, 64, 2048, 8)
SAMPLER = Control("txt2img/Sampling method", "choice", "Euler a", choices=("Euler a", "DDIM"))
HIRES = Control("txt2img/Enable hires. fix", "checkbox", False)
PROMPT = Control("txt2img/Prompt", "text", "")
STYLES = Control("txt2img/Styles", "multichoice", [], choices=("a", "b"))
SEED = Control("txt2img/Seed", "number", -1, minimum=0)
CONTROLS = (STEPS, WIDTH, SAMPLER, HIRES, PROMPT, STYLES, SEED)


def test_a1111_keys_give_values_ranges_and_visibility() -> None:
    found = parse(
        {
            "txt2img/Sampling steps/value": 30,
            "txt2img/Width/minimum": 256,
            "txt2img/Width/maximum": 1024,
            "txt2img/Width/step": 64,
            "txt2img/Width/value": 768,
            "txt2img/Sampling method/value": "DDIM",
            "txt2img/Enable hires. fix/value": True,
            "txt2img/Enable hires. fix/visible": False,
            "txt2img/Prompt/value": "a cat",
            "txt2img/Styles/value": ["b"],
        },
        CONTROLS,
    )
    assert found.problems == ()
    assert found.fields["txt2img/Sampling steps"] == {"value": 30}
    assert found.fields["txt2img/Width"] == {"minimum": 256, "maximum": 1024, "step": 64, "value": 768}
    assert found.fields["txt2img/Enable hires. fix"] == {"value": True, "visible": False}
    assert found.fields["txt2img/Styles"] == {"value": ["b"]}


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("txt2img/Nope/value", 1, "no such control"),
        ("txt2img/Sampling steps/colour", 1, "unknown field"),
        ("nokey", 1, "unknown field"),
        ("txt2img/Sampling steps/value", "30", "must be a number"),
        ("txt2img/Sampling steps/value", 151, "outside 1..150"),
        ("txt2img/Sampling steps/value", True, "must be a number"),
        ("txt2img/Sampling steps/step", 0, "must be above 0"),
        ("txt2img/Sampling method/value", "Heun", "not one of the choices"),
        ("txt2img/Sampling method/maximum", 3, "has no maximum"),
        ("txt2img/Enable hires. fix/value", "yes", "true or false"),
        ("txt2img/Enable hires. fix/visible", 1, "true or false"),
        ("txt2img/Prompt/value", 5, "must be text"),
        ("txt2img/Styles/value", ["c"], "not among the choices"),
        ("txt2img/Seed/value", -5, "outside 0.."),  # a number box with a lower bound only
    ],
)
def test_a_bad_key_or_value_is_named_and_not_used(key: str, value: object, said: str) -> None:
    found = parse({key: value, "txt2img/Width/value": 640}, CONTROLS)
    assert len(found.problems) == 1 and key in found.problems[0] and said in found.problems[0]
    assert found.fields == {"txt2img/Width": {"value": 640}}  # the good key next to it still counts


def test_a_range_that_crosses_is_not_used_and_the_value_is_checked_against_the_range_in_use() -> None:
    found = parse({"txt2img/Width/minimum": 900, "txt2img/Width/maximum": 800}, CONTROLS)
    assert "minimum 900 is not below maximum 800" in found.problems[0]
    assert "txt2img/Width" not in found.fields
    found = parse({"txt2img/Width/maximum": 4096, "txt2img/Width/value": 3000}, CONTROLS)
    assert found.problems == () and found.fields["txt2img/Width"]["value"] == 3000


@pytest.mark.parametrize("text", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_an_unreadable_file_gives_no_defaults_and_one_problem(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "ui-config.json"
    path.write_bytes(text)
    found = load(path, CONTROLS)
    assert found.fields == {} and len(found.problems) == 1 and str(path) in found.problems[0]
    assert path.read_bytes() == text  # never rewritten by reading


def test_a_missing_file_gives_nothing_and_no_problem(tmp_path: Path) -> None:
    assert load(tmp_path / "ui-config.json", CONTROLS) == ui_defaults.UiDefaults()


def test_save_values_writes_values_keeps_other_keys_and_adds_ranges(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Width/maximum": 1024, "customscript/x.py/txt2img/Foo/value": 3}))
    written, skipped = save_values(
        path, CONTROLS, {"txt2img/Sampling steps": 33, "txt2img/Width": 1000, "txt2img/Gone": 1}
    )
    assert written == 2 and skipped == ["txt2img/Gone: no such control"]
    saved = json.loads(path.read_text())
    assert saved["txt2img/Sampling steps/value"] == 33
    assert (saved["txt2img/Sampling steps/minimum"], saved["txt2img/Sampling steps/maximum"]) == (1, 150)
    assert saved["txt2img/Sampling steps/visible"] is True
    assert saved["txt2img/Width/maximum"] == 1024  # the file's own range stays
    assert saved["customscript/x.py/txt2img/Foo/value"] == 3  # unknown keys are kept
    assert load(path, CONTROLS).fields["txt2img/Sampling steps"]["value"] == 33  # read back as written


def test_save_values_skips_a_value_outside_the_files_range(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Width/maximum": 1024}))
    written, skipped = save_values(path, CONTROLS, {"txt2img/Width": 2000})
    assert written == 0 and "outside 64..1024" in skipped[0]
    assert "txt2img/Width/value" not in json.loads(path.read_text())


def test_save_values_is_atomic_and_refuses_to_replace_a_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 25}))
    before = path.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_values(path, CONTROLS, {"txt2img/Sampling steps": 40})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file whole, no temporary left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["ui-config.json"]
    path.write_bytes(b"{broken")
    with pytest.raises(OSError, match="nothing saved"):
        save_values(path, CONTROLS, {"txt2img/Sampling steps": 40})
    assert path.read_bytes() == b"{broken"


def test_themes_are_kept_per_user_and_checked(tmp_path: Path) -> None:
    store = UserPrefsStore(tmp_path / "ui-users.json")
    assert store.theme("ann") == "system"
    store.set_theme("ann", "dark")
    store.set_theme("bob", "light")
    again = UserPrefsStore(tmp_path / "ui-users.json")  # a restart
    assert (again.theme("ann"), again.theme("bob"), again.theme("cy")) == ("dark", "light", "system")
    with pytest.raises(RequestError, match="theme"):
        store.set_theme("ann", "purple")
    assert again.theme("ann") == "dark"


def test_a_damaged_users_file_gives_defaults_then_is_set_aside_on_the_next_change(tmp_path: Path) -> None:
    path = tmp_path / "ui-users.json"
    path.write_text('{"users": [1, 2]}')
    store = UserPrefsStore(path)
    assert store.theme("ann") == "system" and store.problem and str(path) in store.problem
    store.set_theme("ann", "dark")
    assert store.theme("ann") == "dark" and store.problem is None
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("ui-users.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == '{"users": [1, 2]}'


def test_quicksettings_list_takes_shown_settings_only(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "config.json")
    assert settings.get("quicksettings_list") == list(QUICKSETTINGS_DEFAULT)
    settings.get("quicksettings_list").append("sd_vae")  # a copy: the default is not changed
    assert settings.get("quicksettings_list") == list(QUICKSETTINGS_DEFAULT)
    new = settings.updated({"quicksettings_list": ["sd_vae", "samples_format"]})
    new.save()
    assert json.loads((tmp_path / "config.json").read_text())["quicksettings_list"] == [
        "sd_vae",
        "samples_format",
    ]
    assert Settings.load(tmp_path / "config.json").get("quicksettings_list") == ["sd_vae", "samples_format"]
    for bad, said in (
        (["hf_token"], "'hf_token' is not a setting"),
        (["no_such"], "'no_such' is not a setting"),
        (["sd_vae", "sd_vae"], "twice"),
        ("sd_vae", "must be a list of setting names"),
        ([1], "is not a setting"),
    ):
        with pytest.raises(RequestError, match=said):
            settings.updated({"quicksettings_list": bad})


def test_an_a1111_quicksettings_list_keeps_the_settings_sfumato_has(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    listed = ["sd_model_checkpoint", "sd_lora", "sd_vae", "sd_hypernetwork", "sd_vae"]
    path.write_text(json.dumps({"quicksettings_list": listed}))
    settings = Settings.load(path)
    assert settings.get("quicksettings_list") == ["sd_model_checkpoint", "sd_vae"]
    assert settings.problem is not None and "'sd_lora', 'sd_hypernetwork'" in settings.problem
    assert "left out" in settings.problem
    assert json.loads(path.read_text())["quicksettings_list"] == listed  # the file is not rewritten
    path.write_text(json.dumps({"quicksettings_list": ["sd_lora"]}))  # none known: the default row
    assert Settings.load(path).get("quicksettings_list") == list(QUICKSETTINGS_DEFAULT)


def test_the_ui_describes_its_labelled_controls_and_a_label_used_twice_names_the_first() -> None:
    import gradio as gr

    from webui.ui.ui_prefs import collect

    with gr.Blocks(analytics_enabled=False), gr.Tab("t") as tab:
        gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
        gr.Dropdown([("Euler a", "euler_a"), ("DDIM", "ddim")], value="ddim", label="Sampler")
        first = gr.Textbox("", label="Note")
        gr.Textbox("", label="Note")
        gr.Checkbox(False, label="Tiling", visible=False)
        gr.Button("Go")
    components, controls = collect({"txt2img": tab})
    assert set(controls) == {"txt2img/Sampling steps", "txt2img/Sampler", "txt2img/Tiling", "txt2img/Note"}
    assert components["txt2img/Note"] is first
    assert controls["txt2img/Sampling steps"] == Control("txt2img/Sampling steps", "slider", 20, 1, 150, 1)
    assert controls["txt2img/Sampler"].choices == ("euler_a", "ddim")
    assert controls["txt2img/Tiling"].visible is False


@pytest.mark.filterwarnings("ignore:Not saved")  # gr.Warning outside a request is a Python warning
def test_a_quicksetting_is_written_only_when_the_user_changed_it(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from webui.core.settings import SettingsStore
    from webui.ui.quicksettings import save_setting

    store = SettingsStore(tmp_path / "config.json")
    services = SimpleNamespace(
        settings=store,
        manager=SimpleNamespace(resolve=lambda name: name, resolve_vae=lambda name: name),
        options=SimpleNamespace(auth=False),  # no logins: the local user is the admin
    )
    ctx = SimpleNamespace(services=services)
    loaded = {"samples_format": "png"}
    store.update({"samples_format": "webp"})  # saved meanwhile by another page or the API
    import gradio as gr

    assert save_setting(ctx, "samples_format", loaded, "png", None) == (gr.skip(), gr.skip())
    assert store.get("samples_format") == "webp"  # the untouched control did not write its old value
    had, _ = save_setting(ctx, "samples_format", loaded, "jpg", None)
    assert had == {"samples_format": "jpg"} and store.get("samples_format") == "jpg"
    assert json.loads((tmp_path / "config.json").read_text())["samples_format"] == "jpg"
    _, shown = save_setting(ctx, "samples_format", had, "gif", None)  # refused: the stored value shows
    assert shown == "jpg" and store.get("samples_format") == "jpg"
