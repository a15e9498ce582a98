"""Typed values are corrected where they are typed, and errors name fields by the labels on screen."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, open_studio, set_number, wait_status, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def test_a_typed_width_snaps_to_a_multiple_of_8_and_generates(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a snapped size")
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_width", 100)
    set_number(page, "txt2img_height", 66)
    wait_value(page, "#txt2img_width", "104", exact=True)
    wait_value(page, "#txt2img_height", "64", exact=True)
    status = generate(page, "txt2img")
    assert status.startswith("Done"), status
    job = next(j for j in studio.services.queue.list(limit=5) if j.kind == "txt2img")
    assert (job.request["width"], job.request["height"]) == (104, 64)


def test_an_error_names_the_field_by_its_label(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('img2img')")
    page.fill("#img2img_prompt textarea", "no picture yet")
    page.click("#img2img_generate")
    status = wait_status(page, "img2img", ("upload",))
    assert status.startswith("Image: upload an image"), status
    assert "init_images" not in status
