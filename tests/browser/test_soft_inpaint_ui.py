"""Soft inpainting in a real browser: turned on in the Inpaint tab, it reaches the job and its infotext, and
PNG Info's "Send to inpaint" turns it back on with the picture's settings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import RunningStudio, generate, open_studio, set_number, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
CHECKBOX = "#inpaint_soft_inpainting_enabled input[type=checkbox]"


def _tab(page: Any, name: str) -> None:
    page.click(f"button[role=tab]:has-text('{name}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{name}')").wait_for()


def _upload(page: Any, path: Path) -> None:
    """The editor drops a file given before its canvas is up: give a fresh copy until the size follows."""
    page.wait_for_selector("#inpaint_editor canvas")
    for attempt in range(3):
        given = path.with_name(f"{path.stem}-{attempt}{path.suffix}")
        given.write_bytes(path.read_bytes())
        page.set_input_files("#inpaint_editor input[type=file]", str(given))
        try:
            wait_value(page, "#inpaint_width", "64", exact=True, timeout=10)
            return
        except Exception:
            if attempt == 2:
                raise


def _read_in_png_info(page: Any, picture: Path, tmp_path: Path) -> None:
    """Give PNG Info the picture (a fresh copy again if a busy page dropped the first) until it reads it."""
    page.locator("#pnginfo_image").first.wait_for(state="visible")
    for attempt in range(2):
        given = tmp_path / f"read-{attempt}.png"
        given.write_bytes(picture.read_bytes())
        page.set_input_files("#pnginfo_image input[type=file]", str(given))
        try:
            wait_value(page, "#pnginfo_parameters", "Soft inpainting enabled: True", timeout=45)
            return
        except Exception:
            if attempt == 1:
                raise


def _paint(page: Any) -> None:
    canvas = page.locator("#inpaint_editor canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 15, cy)
    page.mouse.down()
    page.mouse.move(cx + 15, cy, steps=10)
    page.mouse.up()
    page.wait_for_timeout(300)


def test_soft_inpainting_turned_on_in_the_inpaint_tab_generates_and_pastes_back(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    init = tmp_path / "soft.png"
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, x * 0 + 90], -1).astype(np.uint8)).save(init)
    page = open_studio(browser, studio.url)
    _tab(page, "Inpaint")
    _upload(page, init)
    _paint(page)
    page.click("#inpaint_soft_inpainting_accordion .label-wrap")
    page.locator(CHECKBOX).check()
    set_number(page, "inpaint_mask_blend_power", 2)
    set_number(page, "inpaint_composite_difference_contrast", 3.5)
    page.fill("#inpaint_prompt textarea", "a soft patch")
    for elem, value in (("inpaint_steps", 3), ("inpaint_mask_blur", 8)):
        set_number(page, elem, value)
    status = generate(page, "inpaint")
    assert status.startswith("Done"), status
    job = next(
        j for j in studio.services.queue.list(limit=20) if j.kind == "img2img" and j.state.value == "done"
    )
    assert job.request["soft_inpainting"] is True and job.request["mask_blend_power"] == 2
    text = job.images[0].infotext
    assert "Soft inpainting enabled: True" in text and "Soft inpainting schedule bias: 2" in text
    assert "Soft inpainting difference contrast: 3.5" in text

    page.locator(CHECKBOX).uncheck()
    set_number(page, "inpaint_mask_blend_power", 1)
    _tab(page, "PNG Info")
    _read_in_png_info(page, Path(job.images[0].path), tmp_path)
    page.click("#pnginfo_to_inpaint")
    wait_value(page, "#inpaint_mask_blend_power", "2", exact=True)
    deadline = time.monotonic() + 10
    while not page.locator(CHECKBOX).is_checked() and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert page.locator(CHECKBOX).is_checked()
    assert page.input_value("#inpaint_composite_difference_contrast input[type=number]") == "3.5"
