"""img2img and inpaint take the uploaded picture's size; 📐 detects it; "Resize by" scales it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.harness import RunningStudio, generate, open_studio, set_number, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _tab(page: Any, name: str) -> None:
    page.click(f"button[role=tab]:has-text('{name}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{name}')").wait_for()


def _size_is(page: Any, tab: str, width: int, height: int) -> None:
    wait_value(page, f"#{tab}_width", str(width), exact=True)
    wait_value(page, f"#{tab}_height", str(height), exact=True)


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "wide.png"
    Image.new("RGB", (320, 256), (40, 120, 200)).save(path)
    return path


def test_img2img_defaults_to_the_uploaded_size_detects_it_and_resizes_by_scale(
    studio: RunningStudio, browser: Any, picture: Path
) -> None:
    page = open_studio(browser, studio.url)
    _tab(page, "img2img")
    page.set_input_files("#img2img_image input[type=file]", str(picture))
    _size_is(page, "img2img", 320, 256)

    set_number(page, "img2img_width", 512)
    wait_value(page, "#img2img_width", "512", exact=True)
    page.click("#img2img_detect_size")
    _size_is(page, "img2img", 320, 256)

    page.click("#img2img_size_mode label:has-text('Resize by')")
    set_number(page, "img2img_scale_by", 0.5)
    wait_value(page, "#img2img_scale_note", "from 320x256 to 160x128")
    page.fill("#img2img_prompt textarea", "a blue card")
    set_number(page, "img2img_steps", 2)
    assert generate(page, "img2img").startswith("Done")
    job = next(j for j in studio.services.queue.list(limit=5) if j.kind == "img2img")
    assert (job.request["width"], job.request["height"]) == (160, 128)
    with Image.open(job.images[0].path) as im:
        assert im.size == (160, 128)


def test_inpaint_defaults_to_the_uploaded_size(studio: RunningStudio, browser: Any, picture: Path) -> None:
    page = open_studio(browser, studio.url)
    _tab(page, "Inpaint")
    page.wait_for_selector("#inpaint_editor canvas")  # the editor is drawn: it takes uploads now
    page.set_input_files("#inpaint_editor input[type=file]", str(picture))
    _size_is(page, "inpaint", 320, 256)
