"""A job's warnings reach the person who ran it: a box under the gallery names what went wrong."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, open_studio, set_number

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _small(page: Any) -> None:
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)


def test_a_missing_lora_shows_a_warning_that_names_it(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a cat <lora:doesnotexist:1>")
    _small(page)
    assert generate(page, "txt2img").startswith("Done")
    box = page.locator("#txt2img_warnings .sf-warnings")
    box.wait_for(state="visible", timeout=30_000)
    assert "doesnotexist" in box.inner_text() and "not found" in box.inner_text()
    # the next job, without the problem, clears the box
    page.fill("#txt2img_prompt textarea", "a cat")
    assert generate(page, "txt2img").startswith("Done")
    page.wait_for_function("!document.querySelector('#txt2img_warnings .sf-warnings')", timeout=30_000)
