"""The styles editor in a real browser: copy the prompt into a new style, save it (styles.csv written,
other rows kept), use it from the Styles box in a generation (infotext keeps the typed prompt and names
the style), apply it to the prompt, delete it; a bad name is refused in words."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    sd1_data_dir,
    set_number,
)

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
EXISTING = 'name,prompt,negative_prompt,description\n# a divider,,,\nwarm,"{prompt}, golden hour",cold,kept\n'


@pytest.fixture(scope="module")
def studio(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = sd1_data_dir(tiny_files, tmp_path_factory.mktemp("styles-data"))
    with running_studio(data, tmp_path_factory.mktemp("styles-studio")) as srv:
        srv.services.engine.styles.path.write_text(EXISTING, encoding="utf-8")
        yield srv


def _rows(studio: RunningStudio) -> list[dict[str, str]]:
    with open(studio.services.engine.styles.path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _open_editor(page: Any, tab: str = "txt2img") -> None:
    page.click(f"#{tab}_styles_editor .label-wrap")
    page.wait_for_selector(f"#{tab}_style_name input", state="visible")


def _status(page: Any, tab: str, words: str) -> str:
    page.wait_for_function(
        f"document.querySelector('#{tab}_style_status textarea').value.includes({words!r})", timeout=10_000
    )
    return str(page.input_value(f"#{tab}_style_status textarea"))


def test_save_use_apply_and_delete_a_style(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "{prompt}, film noir")
    page.fill("#txt2img_neg_prompt textarea", "colour")
    _open_editor(page)
    page.fill("#txt2img_style_name input", "noir")
    page.click("#txt2img_style_copy")
    page.wait_for_function(
        "document.querySelector('#txt2img_style_prompt textarea').value.includes('film noir')"
    )
    page.click("#txt2img_style_save")
    assert "Saved style 'noir'" in _status(page, "txt2img", "Saved")
    rows = _rows(studio)
    assert [r["name"] for r in rows] == ["# a divider", "warm", "noir"]
    assert rows[1]["description"] == "kept"  # other rows and columns survive the rewrite
    assert (rows[2]["prompt"], rows[2]["negative_prompt"]) == ("{prompt}, film noir", "colour")
    # the other tabs offer it at once, without a refresh
    page.click("button[role=tab]:has-text('img2img')")
    page.click("#img2img_styles input")
    page.locator("[role=option]:has-text('noir')").wait_for(timeout=10_000)
    page.keyboard.press("Escape")
    page.click("button[role=tab]:has-text('txt2img')")

    # the Styles box now offers it: generate with it
    page.fill("#txt2img_prompt textarea", "a cat")
    page.fill("#txt2img_neg_prompt textarea", "")
    page.click("#txt2img_styles input")
    page.click("[role=option]:has-text('noir')")
    page.keyboard.press("Escape")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    assert generate(page, "txt2img").startswith("Done")
    job = next(j for j in studio.services.queue.list(limit=5) if j.kind == "txt2img")
    assert job.request["styles"] == ["noir"] and job.request["prompt"] == "a cat"
    assert job.images[0].infotext.startswith("a cat, film noir\nNegative prompt: colour\n")

    # picking a saved style loads it; Apply bakes it into the prompt boxes
    page.fill("#txt2img_prompt textarea", "a dog")
    page.click("#txt2img_style_name input")
    page.click("[role=option]:has-text('warm')")
    page.wait_for_function(
        "document.querySelector('#txt2img_style_prompt textarea').value.includes('golden')"
    )
    page.click("#txt2img_style_apply")
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a dog, golden hour'"
    )
    assert page.input_value("#txt2img_neg_prompt textarea") == "cold"

    page.click("#txt2img_style_name input")
    page.click("[role=option]:has-text('noir')")
    page.click("#txt2img_style_delete")  # styles.csv is shared: it asks first
    page.locator("#txt2img_style_confirm").wait_for(state="visible")
    assert "noir" in page.inner_text("#txt2img_style_confirm")
    page.click("#txt2img_style_delete_cancel")
    page.locator("#txt2img_style_confirm").wait_for(state="hidden")
    assert "noir" in [r["name"] for r in _rows(studio)]
    page.click("#txt2img_style_delete")
    page.click("#txt2img_style_delete_confirm")
    assert "Deleted style 'noir'" in _status(page, "txt2img", "Deleted")
    assert [r["name"] for r in _rows(studio)] == ["# a divider", "warm"]


def test_a_bad_name_is_refused_and_the_file_is_untouched(studio: RunningStudio, browser: Any) -> None:
    path = studio.services.engine.styles.path
    path.write_text(path.read_text(encoding="utf-8-sig") + "hand made,by hand,\n", encoding="utf-8")
    before = path.read_bytes()
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('img2img')")
    _open_editor(page, "img2img")  # opening it re-reads styles.csv
    page.click("#img2img_style_name input")
    page.click("[role=option]:has-text('hand made')")
    page.wait_for_function("document.querySelector('#img2img_style_prompt textarea').value === 'by hand'")
    page.fill("#img2img_style_name input", "#comment")
    page.click("#img2img_style_save")
    assert "must not start with '#'" in _status(page, "img2img", "Not saved")
    assert studio.services.engine.styles.path.read_bytes() == before
