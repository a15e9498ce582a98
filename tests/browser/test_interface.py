"""Theme, UI defaults (ui-config.json), the quicksettings row and Ctrl+Up/Down in a real browser.

One server on a data folder with the tiny SD1, started with a ui-config.json (one good default, one
widened range, one unknown control and one unknown field) and a quicksettings_list that adds
samples_format to the top row and leaves the VAE out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, open_studio, reload, running_studio, sd1_data_dir

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

UI_CONFIG = {
    "txt2img/Sampling steps/value": 7,
    "txt2img/Width/maximum": 1024,
    "txt2img/No such slider/value": 3,
    "txt2img/Sampling steps/colour": "red",
    "img2img/Sampling steps/value": 999,  # above the slider's maximum: refused, named
    "img2img/Denoising strength/value": 0.5,  # a label a script uses too: the tab's own control
}


@pytest.fixture(scope="module")
def srv(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    tmp = tmp_path_factory.mktemp("interface")
    data = sd1_data_dir(tiny_files, tmp / "data")
    (tmp / "ui-config.json").write_text(json.dumps(UI_CONFIG), encoding="utf-8")
    quick = ["sd_model_checkpoint", "CLIP_stop_at_last_layers", "samples_format"]
    (tmp / "config.json").write_text(json.dumps({"quicksettings_list": quick}), encoding="utf-8")
    with running_studio(data, tmp) as running:
        yield running


def _open_ui_section(page: Any) -> None:
    page.click("button[role=tab]:has-text('Settings')")
    page.click("#settings_theme_and_ui_defaults button:has-text('Theme and UI defaults')")
    page.locator("#settings_theme").wait_for(state="visible")


def _is_dark(page: Any) -> bool:
    return bool(page.evaluate("document.body.classList.contains('dark')"))


def test_ui_config_default_shows_and_bad_keys_are_listed(srv: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, srv.url)
    assert page.input_value("#txt2img_steps input[type=number]") == "7"
    assert page.get_attribute("#txt2img_width input[type=range]", "max") == "1024"
    steps = srv.studio.context.ui_defaults.components["img2img/Sampling steps"]
    assert steps.value == 20  # its bad value is not used
    denoise = srv.studio.context.ui_defaults.components["img2img/Denoising strength"]
    assert denoise.elem_id == "img2img_denoising" and denoise.value == 0.5
    _open_ui_section(page)
    listed = page.input_value("#settings_ui_config_problems textarea")
    for key in (
        "txt2img/No such slider/value",
        "txt2img/Sampling steps/colour",
        "img2img/Sampling steps/value",
    ):
        assert key in listed, listed
    page.context.close()


def test_set_current_values_as_defaults_writes_the_page_values(srv: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, srv.url)
    box = page.locator("#txt2img_steps input[type=number]")
    box.fill("11")
    box.press("Enter")
    _open_ui_section(page)
    page.click("#settings_ui_defaults")
    page.wait_for_function(
        "document.querySelector('#settings_ui_defaults_result textarea').value.startsWith('Saved')",
        timeout=20_000,
    )
    saved = json.loads((srv.config.settings_path.parent / "ui-config.json").read_text(encoding="utf-8"))
    assert saved["txt2img/Sampling steps/value"] == 11
    assert saved["txt2img/Width/maximum"] == 1024  # the file's own range kept
    assert saved["txt2img/No such slider/value"] == 3  # keys it does not know are kept as they were
    assert saved["txt2img/Prompt/value"] == ""
    assert not list(srv.config.settings_path.parent.glob(".ui-config.json.*"))  # no temporary left over
    page.context.close()


def test_theme_survives_reload_and_a_new_browser(srv: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, srv.url, color_scheme="light")
    assert not _is_dark(page)
    _open_ui_section(page)
    page.locator("#settings_theme label:has-text('Dark')").click()
    page.wait_for_function("document.body.classList.contains('dark')", timeout=10_000)
    users = srv.config.settings_path.parent / "ui-users.json"
    for _ in range(50):
        if users.exists() and json.loads(users.read_text())["users"].get("local", {}).get("theme") == "dark":
            break
        page.wait_for_timeout(100)
    assert json.loads(users.read_text())["users"]["local"]["theme"] == "dark"
    reload(page)
    assert _is_dark(page) and page.evaluate("document.body.dataset.sfTheme") == "dark"
    # a fresh browser (nothing stored in it) gets the user's theme from the server
    other = open_studio(browser, srv.url, color_scheme="light")
    assert _is_dark(other)
    _open_ui_section(other)
    other.locator("#settings_theme label:has-text('Follow the system')").click()
    other.wait_for_function("!document.body.classList.contains('dark')", timeout=10_000)
    other.context.close()
    dark_system = open_studio(browser, srv.url, color_scheme="dark")  # "system" follows the system
    assert _is_dark(dark_system)
    dark_system.context.close()
    page.context.close()


def test_quicksettings_row_shows_the_listed_settings(srv: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, srv.url)
    assert page.locator("#sf_checkpoint").is_visible()
    assert page.locator("#sf_clip_skip").is_visible()
    assert page.locator("#sf_vae").count() == 0 or not page.locator("#sf_vae").is_visible()
    box = page.locator("#qs_samples_format textarea, #qs_samples_format input").first
    assert box.is_visible() and box.input_value() == "png"
    assert page.locator("#qs_jpeg_quality").count() == 0 or not page.locator("#qs_jpeg_quality").is_visible()
    box.fill("jpg")
    box.press("Enter")
    for _ in range(50):
        if srv.services.settings.get("samples_format") == "jpg":
            break
        page.wait_for_timeout(100)
    assert json.loads(srv.config.settings_path.read_text())["samples_format"] == "jpg"
    # a bad value is refused (and said); the box shows the stored one again
    box.fill("gif")
    box.press("Enter")
    page.wait_for_function(
        "document.querySelector('#qs_samples_format textarea, #qs_samples_format input').value === 'jpg'",
        timeout=10_000,
    )
    page.get_by_text("Not saved: samples_format").first.wait_for(timeout=10_000)
    assert "got 'gif'" in page.get_by_text("Not saved: samples_format").first.inner_text()
    assert srv.services.settings.get("samples_format") == "jpg"
    # the list changed elsewhere (the API): the next page load shows the VAE and hides the format
    srv.services.settings.update({"quicksettings_list": ["sd_model_checkpoint", "sd_vae"]})
    reload(page)
    page.locator("#sf_vae").wait_for(state="visible")
    assert not page.locator("#qs_samples_format").is_visible()
    assert not page.locator("#sf_clip_skip").is_visible()
    page.context.close()


def _ctrl(page: Any, key: str) -> str:
    page.keyboard.press(f"Control+{key}")
    return str(page.input_value("#txt2img_prompt textarea"))


def test_ctrl_up_and_down_change_the_attention_weight(srv: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, srv.url)
    box = page.locator("#txt2img_prompt textarea")
    box.fill("a red cat, sitting")
    box.evaluate("b => b.setSelectionRange(7, 7)")  # the cursor in "cat"
    assert _ctrl(page, "ArrowUp") == "a red (cat:1.1), sitting"
    assert _ctrl(page, "ArrowUp") == "a red (cat:1.2), sitting"
    assert _ctrl(page, "ArrowDown") == "a red (cat:1.1), sitting"
    assert _ctrl(page, "ArrowDown") == "a red cat, sitting"  # back at 1.0: no parentheses
    box.evaluate("b => b.setSelectionRange(2, 9)")  # "red cat"
    assert _ctrl(page, "ArrowDown") == "a (red cat:0.9), sitting"
    box.evaluate("b => b.setSelectionRange(5, 5)")  # inside the group: the whole group
    assert _ctrl(page, "ArrowDown") == "a (red cat:0.8), sitting"
    # the edit reached Gradio's value: a reload of the tab's controls would not undo it, and the
    # Ctrl+Enter key still generates with it
    page.locator("#txt2img_steps input[type=number]").fill("1")
    page.locator("#txt2img_steps input[type=number]").press("Enter")
    for elem in ("txt2img_width", "txt2img_height"):
        page.locator(f"#{elem} input[type=number]").fill("64")
        page.locator(f"#{elem} input[type=number]").press("Enter")
    box.focus()
    page.keyboard.press("Control+Enter")
    for _ in range(300):
        jobs = srv.services.queue.list(limit=5)
        if jobs and jobs[0].request.get("prompt") == "a (red cat:0.8), sitting":
            break
        page.wait_for_timeout(100)
    assert jobs and jobs[0].request["prompt"] == "a (red cat:0.8), sitting"
    page.context.close()


def test_alt_enter_skips_the_running_batch(srv: RunningStudio, browser: Any) -> None:
    from tests.browser.harness import set_number, wait_status

    page = open_studio(browser, srv.url)
    page.fill("#txt2img_prompt textarea", "skipped by a key")
    for elem, value in (("txt2img_steps", 100), ("txt2img_width", 128), ("txt2img_height", 128)):
        set_number(page, elem, value)
    set_number(page, "txt2img_batch_count", 3)
    page.click("#txt2img_generate")
    wait_status(page, "txt2img", ("batch 1/3",), timeout=60)
    page.keyboard.press("Alt+Enter")  # A1111's key for Skip: the first batch is dropped, the rest run
    status = wait_status(page, "txt2img", ("Interrupted", "Done", "Failed"), timeout=120, start=True)
    assert status.startswith("Done") and "2 images" in status, status
    job = srv.services.queue.list(limit=1)[0]
    assert job.request["prompt"] == "skipped by a key" and len(job.images) == 2
    page.context.close()
