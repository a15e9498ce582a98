"""img2img "Sketch" and Inpaint "Inpaint sketch" in a real browser: a colour picked from the brush's
palette, a stroke painted on the picture, Generate; the stroke's colour reaches the init image, and an
inpaint sketch leaves every pixel away from the stroke as it was. Desktop and phone sizes."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import RunningStudio, generate, open_studio, set_number

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
RED = (224, 60, 49)  # the palette's red (webui.ui.sketch_ui.SKETCH_COLOURS)
SIZE = 128
CENTRE = (128, 128, 200)  # the source's colour in its middle


def _source(path: Path) -> np.ndarray:
    """A picture with a different colour at every pixel, so a moved or changed pixel shows."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    arr = np.stack([x * 2, y * 2, np.full_like(x, 200)], axis=-1).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _open_sketch(page: Any, main: str, sub: str, tab: str) -> None:
    page.click(f"button[role=tab]:has-text('{main}')")
    page.click(f"button[role=tab]:has-text('{sub}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{sub}')").first.wait_for()
    assert page.locator(f"#{tab}_sketch_tab-button").count() == 1  # one button per tab, however often picked


def _upload(page: Any, editor: str, path: Path) -> tuple[float, float]:
    """Upload into the sketch editor and wait until the canvas shows it; the canvas centre on screen. The
    canvas is measured again while waiting (the picture's arrival moves the layout), and a busy page that
    dropped the file (given before the canvas was up) gets a fresh copy, as a person would drop it again."""
    page.locator(editor).wait_for(state="visible")
    canvas = page.locator(f"{editor} canvas").first
    seen: Any = None
    for attempt in range(3):
        given = path.with_name(f"{path.stem}-{editor.strip('#')}-{attempt}{path.suffix}")
        given.write_bytes(path.read_bytes())
        page.set_input_files(f"{editor} input[type=file]", str(given))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            if (seen := _pixel(page, cx, cy)) == pytest.approx(CENTRE, abs=20):  # the picture's middle
                return cx, cy
            page.wait_for_timeout(100)
    raise AssertionError(f"the picture never showed in {editor}: {seen} at its centre")


def _pixel(page: Any, x: float, y: float) -> tuple[int, int, int]:
    shot = page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3})
    with Image.open(io.BytesIO(shot)) as im:
        return tuple(im.convert("RGB").getpixel((1, 1)))  # type: ignore[return-value]


def _paint_red_stroke(page: Any, editor: str, centre: tuple[float, float]) -> None:
    page.click(f"{editor} button[aria-label='Color']")
    page.locator(f"{editor} menu.swatch button.color").nth(3).click()  # white, black, grey, red, ...
    page.click(f"{editor} button[aria-label='Brush']")  # closes the palette; the brush stays red
    colour = page.locator(f"{editor} button[aria-label='Color']").evaluate("b => b.style.color")
    assert colour == "rgb(224, 60, 49)", colour
    cx, cy = centre
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    page.mouse.move(cx + 30, cy, steps=10)
    page.mouse.up()
    deadline = time.monotonic() + 10
    while (seen := _pixel(page, cx, cy)) != pytest.approx(RED, abs=16) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert seen == pytest.approx(RED, abs=16), seen  # the stroke shows in the picked colour


def _generate(page: Any, tab: str, studio: RunningStudio) -> Any:
    page.fill(f"#{tab}_prompt textarea", "a red line")
    for elem, value in ((f"{tab}_steps", 3), (f"{tab}_width", SIZE), (f"{tab}_height", SIZE)):
        set_number(page, elem, value)
    status = generate(page, tab)
    assert status.startswith("Done"), status
    page.wait_for_function(f"document.querySelectorAll('#{tab}_gallery img').length >= 1")
    return next(
        j for j in studio.services.queue.list(limit=20) if j.kind == "img2img" and j.state.value == "done"
    )


def _stored(studio: RunningStudio, job: Any, name: str) -> np.ndarray:
    value = job.request[name]
    value = value[0] if isinstance(value, list) else value  # init_images: one per batch image
    with Image.open(studio.services.queue.files_dir / job.id / value["$image"]) as im:
        return np.asarray(im.convert("RGB" if name != "mask" else "L"))


def test_inpaint_sketch_paints_a_colour_and_keeps_the_rest(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    source = _source(tmp_path / "source.png")
    page = open_studio(browser, studio.url)
    _open_sketch(page, "Inpaint", "Inpaint sketch", "inpaint")
    centre = _upload(page, "#inpaint_sketch", tmp_path / "source.png")
    _paint_red_stroke(page, "#inpaint_sketch", centre)
    job = _generate(page, "inpaint", studio)

    mask = _stored(studio, job, "mask") > 0
    rows, cols = np.nonzero(mask)
    assert rows.size > 50  # the stroke, across the middle of the picture
    assert rows.min() >= 40 and rows.max() <= 88 and cols.min() >= 20 and cols.max() <= 108
    init = _stored(studio, job, "init_images")
    centre = init[int(rows.mean()), int(cols.mean())].astype(int)
    assert centre[0] > 150 and centre[2] < 140, centre  # the painted red, not the picture's blue
    assert np.array_equal(init[~mask], source[~mask])

    out_path = Path(job.images[0].path)
    assert out_path.is_file()
    with Image.open(out_path) as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape == source.shape
    far = np.ones(mask.shape, bool)
    far[max(rows.min() - 12, 0) : rows.max() + 13, max(cols.min() - 12, 0) : cols.max() + 13] = False
    assert far.sum() > SIZE * SIZE // 2
    assert np.array_equal(out[far], source[far])  # far from the stroke: the source, byte for byte
    assert np.array_equal(out[~mask], source[~mask])  # and everywhere it was not painted
    assert not np.array_equal(out[mask], source[mask])

    # Mask transparency 100: the same stroke is masked, but its colour is gone from the init image
    set_number(page, "inpaint_mask_alpha", 100)
    status = generate(page, "inpaint")
    assert status.startswith("Done"), status
    see_through = studio.services.queue.list(limit=1)[0]
    assert see_through.id != job.id and see_through.state.value == "done"
    assert np.array_equal(_stored(studio, see_through, "mask") > 0, mask)
    assert np.array_equal(_stored(studio, see_through, "init_images"), source)


def test_img2img_sketch_sends_the_painted_picture_and_send_to_shows_the_picture_tab(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    source = _source(tmp_path / "source.png")
    page = open_studio(browser, studio.url)
    _open_sketch(page, "img2img", "Sketch", "img2img")
    centre = _upload(page, "#img2img_sketch", tmp_path / "source.png")
    _paint_red_stroke(page, "#img2img_sketch", centre)
    job = _generate(page, "img2img", studio)
    assert job.request.get("mask") is None
    init = _stored(studio, job, "init_images")
    red = np.all(np.abs(init.astype(int) - RED) <= 2, axis=-1)
    assert red.sum() > 50 and not np.all(np.abs(source.astype(int) - RED) <= 2, axis=-1).any()
    assert np.array_equal(init[:30], source[:30])  # the top, away from the stroke, is the picture
    # a picture sent to img2img lands in the Picture sub-tab, and that is what Generate then uses
    page.click("#img2img_to_img2img")
    page.locator("button[role=tab][aria-selected=true]:has-text('Picture')").first.wait_for()
    page.locator("#img2img_image img").first.wait_for(state="visible")


def test_the_sketch_editors_are_usable_on_a_phone(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    """390 px wide: editor, tools and palette on screen, no sideways scrolling, and a stroke paints."""
    _source(tmp_path / "source.png")
    width = 390
    page = open_studio(
        browser, studio.url, viewport={"width": width, "height": 844}, is_mobile=True, has_touch=True
    )
    for main, sub, tab in (("img2img", "Sketch", "img2img"), ("Inpaint", "Inpaint sketch", "inpaint")):
        editor = f"#{tab}_sketch"
        _open_sketch(page, main, sub, tab)
        centre = _upload(page, editor, tmp_path / "source.png")
        page.click(f"{editor} button[aria-label='Color']")
        for element in (
            f"{editor} canvas",
            f"{editor} button[aria-label='Brush']",
            f"{editor} button[aria-label='Brush Size']",
            f"{editor} button[aria-label='Erase']",
            f"{editor} menu.swatch button.color >> nth=8",
        ):
            target = page.locator(element).first
            box = target.bounding_box()
            assert box is not None and box["width"] >= 16 and box["height"] >= 16, (element, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (element, box)
        page.click(f"{editor} button[aria-label='Brush']")
        scroll = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll[0] <= scroll[1] <= width, scroll
    _paint_red_stroke(page, "#inpaint_sketch", centre)
