"""The live preview takes the gallery's place while a job runs, drawn at the output's size, at desktop,
laptop and phone sizes; the gallery comes back with the images. Hires fix names its second pass.

Screenshots of each size go to $SFUMATO_SHOTS when it is set (to look at them), else to a temp folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, open_studio, set_number, wait_status

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

SIZES = {
    "desktop": {"width": 1400, "height": 1000},
    "laptop": {"width": 1280, "height": 720},
    "phone": {"width": 390, "height": 844},
}
WIDTH, HEIGHT = 448, 320


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SFUMATO_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box  # type: ignore[no-any-return]


@pytest.mark.parametrize("size", list(SIZES))
def test_live_preview_replaces_the_gallery_at_the_output_size(
    studio: RunningStudio, browser: Any, size: str, tmp_path: Path
) -> None:
    viewport = SIZES[size]
    phone = size == "phone"
    page = open_studio(browser, studio.url, viewport=viewport, is_mobile=phone, has_touch=phone)
    page.fill("#txt2img_prompt textarea", "a preview as big as the picture")
    set_number(page, "txt2img_steps", 40)
    set_number(page, "txt2img_width", WIDTH)
    set_number(page, "txt2img_height", HEIGHT)
    page.click("#txt2img_generate")
    wait_status(page, "txt2img", ("step",), timeout=60)
    # read in the same look as the wait: the next preview may replace the image right after
    natural = page.wait_for_function(
        "() => { const i = document.querySelector('#txt2img_preview img');"
        " return !!i && i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight]; }",
        timeout=30_000,
    ).json_value()
    assert natural == [WIDTH, HEIGHT], natural  # the preview comes at the output's size, not 56x40
    assert not page.is_visible("#txt2img_gallery")  # the preview is in the gallery's place
    # seen without scrolling by hand: the page brings the preview into sight when it is not
    page.wait_for_function(
        "() => { const b = document.querySelector('#txt2img_preview img').getBoundingClientRect();"
        " return b.top >= 0 && b.bottom <= window.innerHeight; }",
        timeout=5_000,
    )
    page.screenshot(path=str(_shots(tmp_path) / f"preview-{size}.png"))
    image = _box(page, "#txt2img_preview img")
    column = _box(page, "#txt2img_preview")
    assert abs(image["width"] - min(WIDTH, column["width"])) <= 24, (image, column)
    assert abs(image["width"] / image["height"] - WIDTH / HEIGHT) < 0.03, image
    assert image["x"] >= 0 and image["x"] + image["width"] <= viewport["width"], image
    assert image["y"] >= 0 and image["y"] + image["height"] <= viewport["height"], (image, viewport)
    status = _box(page, "#txt2img_status")
    assert -2 <= status["y"] <= viewport["height"], status
    page.click("#txt2img_interrupt")
    done = wait_status(page, "txt2img", ("Interrupted", "Done", "Failed"), timeout=60, start=True)
    assert done.startswith(("Interrupted", "Done")), done
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 1")
    assert page.is_visible("#txt2img_gallery") and not page.is_visible("#txt2img_preview")
    page.locator("#txt2img_gallery").scroll_into_view_if_needed()
    page.screenshot(path=str(_shots(tmp_path) / f"result-{size}.png"))
    page.context.close()


def test_hires_second_pass_is_named_in_the_status(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "two passes")
    set_number(page, "txt2img_steps", 4)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    page.click("#txt2img_hires button, #txt2img_hires .label-wrap")
    page.check("#txt2img_enable_hr input")
    set_number(page, "txt2img_hr_scale", 4)
    set_number(page, "txt2img_hr_steps", 150)
    page.click("#txt2img_generate")
    text = wait_status(page, "txt2img", ("Hires pass: step",), timeout=90)
    step, steps = text.split("step ", 1)[1].split(",")[0].split("/")
    assert 100 <= int(steps) <= 105 and 1 <= int(step) <= int(steps), text  # 150 at denoising 0.7
    page.click("#txt2img_interrupt")
    wait_status(page, "txt2img", ("Interrupted", "Done", "Failed"), timeout=60, start=True)
    page.context.close()
