"""Stored state in a real browser is read when the page opens, and a page never writes back what its user
did not touch: a saved setting survives a reload, a stale page's Apply keeps a value saved meanwhile by
another page, a change through POST /sdapi/v1/options shows after a reload, and so does a style saved
elsewhere (no ↻ needed)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.harness import RunningStudio, open_studio, reload, running_studio

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
JPEG = "Quality for saved jpeg and webp images (jpeg_quality)"
GRIDS = "File format for grids (grid_format)"  # in the open "Saving images" group, like JPEG


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = tmp_path_factory.mktemp("page-load-data")  # no model needed: settings and lists only
    with running_studio(data, tmp_path_factory.mktemp("page-load"), flags=["--api"]) as srv:
        yield srv


def _settings_tab(page: Any) -> None:
    page.click("button[role=tab]:has-text('Settings')")
    page.get_by_label(JPEG).wait_for(state="visible")


def _box_shows(page: Any, label: str, value: str) -> None:
    page.wait_for_function(
        "([label, value]) => [...document.querySelectorAll('#tab_settings label')]"
        ".some(l => l.textContent.includes(label) && l.querySelector('input')?.value === value)",
        arg=[label, value],
        timeout=10_000,
    )


def _apply(page: Any) -> str:
    page.evaluate("document.querySelector('#settings_result textarea, #settings_result input').value = ''")
    page.click("#settings_apply")
    page.wait_for_function(
        "document.querySelector('#settings_result textarea, #settings_result input').value !== ''"
    )
    return str(page.input_value("#settings_result textarea, #settings_result input"))


def _saved(studio: RunningStudio) -> dict[str, Any]:
    return dict(json.loads(Path(studio.config.settings_path).read_text(encoding="utf-8")))


def test_a_saved_setting_survives_a_reload(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _settings_tab(page)
    page.get_by_label(JPEG).fill("77")
    assert _apply(page) == "Saved 1 setting: jpeg_quality."
    reload(page)
    _settings_tab(page)
    assert page.get_by_label(JPEG).input_value() == "77"
    # and applying another change from the reloaded page does not write anything back
    page.get_by_label(GRIDS).fill("webp")
    assert _apply(page) == "Saved 1 setting: grid_format."
    saved = _saved(studio)
    assert (saved["jpeg_quality"], saved["grid_format"]) == (77, "webp")
    page.context.close()


def test_a_stale_page_keeps_what_another_page_saved(studio: RunningStudio, browser: Any) -> None:
    a = open_studio(browser, studio.url)
    _settings_tab(a)
    b = open_studio(browser, studio.url)
    _settings_tab(b)
    b.get_by_label(JPEG).fill("61")
    assert _apply(b) == "Saved 1 setting: jpeg_quality."

    a.get_by_label(GRIDS).fill("jpg")
    message = _apply(a)  # A still shows 80 for jpeg_quality, untouched: B's 61 is kept, and A says so
    assert message == "Saved 1 setting: grid_format; kept as saved elsewhere meanwhile: jpeg_quality."
    saved = _saved(studio)
    assert (saved["jpeg_quality"], saved["grid_format"]) == (61, "jpg")
    _box_shows(a, JPEG, "61")  # and page A now shows it
    for page in (a, b):
        page.context.close()


def test_a_change_through_the_api_shows_after_a_reload(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _settings_tab(page)
    response = httpx.post(f"{studio.url}/sdapi/v1/options", json={"jpeg_quality": 42, "s_noise": 0.5})
    assert response.status_code == 200, response.text
    reload(page)
    _settings_tab(page)
    assert page.get_by_label(JPEG).input_value() == "42"
    page.click("button:has-text('Sampler parameters')")
    assert page.get_by_label("sigma noise (s_noise)").input_value() == "0.5"
    page.context.close()


def test_a_style_saved_elsewhere_shows_after_a_reload(studio: RunningStudio, browser: Any) -> None:
    from webui.core.prompts.styles import Style

    page = open_studio(browser, studio.url)
    studio.services.engine.styles.save(Style("sunset", "{prompt}, at sunset", ""))  # another tab's Save
    reload(page)
    page.click("#txt2img_styles input")
    page.locator("[role=option]:has-text('sunset')").wait_for(timeout=10_000)
    page.context.close()


def test_a_model_added_and_refreshed_through_the_api_shows_after_a_reload(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    page.locator("#sf_first_run").wait_for(state="visible")  # no model yet: the first-run notice
    folder = studio.config.ckpt_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fresh-model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # listed, never loaded
    response = httpx.post(f"{studio.url}/sdapi/v1/refresh-checkpoints")
    assert response.status_code == 200, response.text
    reload(page)
    page.locator("#sf_first_run").wait_for(state="hidden")
    assert "fresh-model" in page.input_value("#sf_checkpoint input")
    page.click("button[role=tab]:has-text('Models')")
    page.wait_for_function(
        "document.querySelector('#models_table').innerText.includes('fresh-model.safetensors')",
        timeout=10_000,
    )
    page.context.close()
