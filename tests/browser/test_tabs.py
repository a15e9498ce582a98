"""The other tabs in a real browser: PNG Info -> txt2img reproduces an image; img2img and inpaint generate;
models search; settings save."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.browser.harness import RunningStudio, generate, open_studio, set_number, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
XSS = "<img src=x onerror=alert(1)>"


def _latest_done(studio: RunningStudio, kind: str) -> Any:
    return next(j for j in studio.services.queue.list(limit=50) if j.kind == kind and j.state.value == "done")


def _tab(page: Any, name: str) -> None:
    page.click(f"button[role=tab]:has-text('{name}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{name}')").wait_for()


def _reference_image(studio: RunningStudio) -> Path:
    from webui.core.types import Txt2ImgRequest

    request = Txt2ImgRequest(
        prompt="a (blue:1.2) house", negative_prompt="fog", steps=4, width=64, height=96, seed=4242,
        cfg_scale=5.5,
        sampler_name="Euler a", checkpoint="tiny-sd1", subseed=7, subseed_strength=0.3, clip_skip=2,
    )  # fmt: skip
    job = studio.services.queue.submit(request, owner="someone-else")
    done = studio.services.queue.wait(job.id, timeout=120)
    assert done.state.value == "done"
    return Path(done.images[0].path)


def test_png_info_send_to_txt2img_regenerates_the_same_image(studio: RunningStudio, browser: Any) -> None:
    source = _reference_image(studio)
    page = open_studio(browser, studio.url)
    _tab(page, "PNG Info")
    page.set_input_files("#pnginfo_image input[type=file]", str(source))
    page.wait_for_function(
        "document.querySelector('#pnginfo_parameters textarea').value.includes('Seed: 4242')"
    )
    assert "A1111 infotext" in page.input_value("#pnginfo_summary textarea, #pnginfo_summary input")
    page.click("#pnginfo_to_txt2img")
    wait_value(page, "#txt2img_seed", "4242", exact=True)
    assert page.input_value("#txt2img_prompt textarea") == "a (blue:1.2) house"
    assert page.input_value("#txt2img_neg_prompt textarea") == "fog"
    assert page.input_value("#txt2img_seed input") == "4242"
    assert page.input_value("#txt2img_height input[type=number]") == "96"
    assert "tiny-sd1.safetensors" in page.input_value("#sf_checkpoint input")
    status = generate(page, "txt2img")
    assert status.startswith("Done"), status
    job = _latest_done(studio, "txt2img")
    assert job.request["clip_skip"] == 2 and job.request["subseed_strength"] == pytest.approx(0.3)
    with Image.open(source) as a, Image.open(job.images[0].path) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_png_info_shows_comfyui_and_invokeai_metadata_as_text(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 99, "steps": 3, "cfg": 6, "sampler_name": "euler",
              "scheduler": "karras", "positive": ["6", 0], "negative": ["7", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": f"comfy cat {XSS}"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }  # fmt: skip
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps({"nodes": [], "note": XSS}))
    path = tmp_path / f"{XSS.replace('/', '_')}.png"
    Image.new("RGB", (64, 64), "gray").save(path, pnginfo=info)
    page = open_studio(browser, studio.url)
    _tab(page, "PNG Info")
    page.set_input_files("#pnginfo_image input[type=file]", str(path))
    page.wait_for_function("document.querySelector('#pnginfo_other textarea').value.includes('workflow')")
    assert "ComfyUI" in page.input_value("#pnginfo_summary textarea, #pnginfo_summary input")
    page.click("#pnginfo_to_txt2img")
    wait_value(page, "#txt2img_seed", "99", exact=True)
    assert page.input_value("#txt2img_prompt textarea") == f"comfy cat {XSS}"
    assert page.input_value("#txt2img_seed input") == "99"
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == []


def _upload_init(page: Any, selector: str, path: Path, tab: str) -> None:
    """Upload a 64x64 picture and wait until the server has it (the tab's size follows the picture).
    The image editor drops a file given before its canvas is up: then a copy (a new file, so the input
    changes) is given again."""
    page.locator(selector).first.wait_for(state="visible")
    for attempt in range(3):
        given = path if attempt == 0 else path.with_name(f"{path.stem}-{attempt}{path.suffix}")
        if given != path:
            given.write_bytes(path.read_bytes())
        page.set_input_files(f"{selector} input[type=file]", str(given))
        try:
            wait_value(page, f"#{tab}_width", "64", exact=True, timeout=10)
            break
        except Exception:
            if attempt == 2:
                raise
    wait_value(page, f"#{tab}_height", "64", exact=True, timeout=10)  # both sizes followed the picture


def test_img2img_generates_from_an_uploaded_image(
    studio: RunningStudio, browser: Any, tmp_path: Path
) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    page = open_studio(browser, studio.url)
    _tab(page, "img2img")
    _upload_init(page, "#img2img_image", init, "img2img")
    page.fill("#img2img_prompt textarea", "a red square, repainted")
    for elem, value in (("img2img_steps", 3), ("img2img_width", 64), ("img2img_height", 64)):
        set_number(page, elem, value)
    status = generate(page, "img2img")
    assert status.startswith("Done"), status
    page.wait_for_function("document.querySelectorAll('#img2img_gallery img').length >= 1")
    job = _latest_done(studio, "img2img")
    assert Path(job.images[0].path).is_file() and "Denoising strength: 0.75" in job.images[0].infotext


def _pixel(page: Any, x: float, y: float) -> tuple[int, int, int]:
    """The colour on screen at (x, y)."""
    import io

    shot = page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3})
    with Image.open(io.BytesIO(shot)) as im:
        return tuple(im.convert("RGB").getpixel((1, 1)))  # type: ignore[return-value]


def test_inpaint_generates_with_a_painted_mask(studio: RunningStudio, browser: Any, tmp_path: Path) -> None:
    init = tmp_path / "inpaint.png"
    Image.new("RGB", (64, 64), (30, 30, 200)).save(init)
    page = open_studio(browser, studio.url)
    _tab(page, "Inpaint")
    _upload_init(page, "#inpaint_editor", init, "inpaint")
    canvas = page.locator("#inpaint_editor canvas").first
    canvas.scroll_into_view_if_needed()  # below the prompt's accordions at 1280x900, as a user scrolls
    box = canvas.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert _pixel(page, cx, cy) == pytest.approx((30, 30, 200), abs=12)  # the picture
    page.mouse.move(cx - 10, cy)
    page.mouse.down()
    page.mouse.move(cx + 10, cy, steps=8)
    page.mouse.up()
    # the stroke is drawn see-through: lighter than the picture, yet the picture's blue shows under it
    deadline = time.monotonic() + 10
    while (seen := _pixel(page, cx, cy))[0] < 60 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    r, g, b = seen
    assert 60 <= r <= 220 and b - r >= 40, seen
    page.fill("#inpaint_prompt textarea", "a patch")
    for elem, value in (("inpaint_steps", 3), ("inpaint_width", 64), ("inpaint_height", 64)):
        set_number(page, elem, value)
    status = generate(page, "inpaint")
    assert status.startswith("Done"), status
    job = _latest_done(studio, "img2img")
    assert job.request.get("mask") and "Mask blur: 4" in job.images[0].infotext
    page.wait_for_function("document.querySelectorAll('#inpaint_gallery img').length >= 1")


def test_models_tab_lists_and_searches(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _tab(page, "Models")
    assert "tiny-sdxl.safetensors" in page.inner_text("#models_table")
    page.fill("#models_search textarea, #models_search input", "sd2")
    page.wait_for_function("!document.querySelector('#models_table').innerText.includes('tiny-sdxl')")
    text = page.inner_text("#models_table")
    assert "tiny-sd2-v.safetensors" in text and "tiny-sdxl" not in text


def test_settings_tab_saves_atomically_to_config_json(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _tab(page, "Settings")
    box = page.get_by_label("Quality for saved jpeg and webp images (jpeg_quality)")
    box.fill("91")
    page.click("#settings_apply")
    page.wait_for_function(
        "document.querySelector('#settings_result textarea, #settings_result input')"
        ".value.startsWith('Saved')"
    )
    saved = json.loads(studio.services.config.settings_path.read_text(encoding="utf-8"))
    assert saved["jpeg_quality"] == 91


UNNAMED_BUTTONS = """() => [...document.querySelectorAll('button')]
  .filter((b) => b.offsetParent !== null)
  .filter((b) => !/\\p{L}/u.test((b.getAttribute('aria-label') || '') + b.textContent))
  .map((b) => b.id || b.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("tab", ["txt2img", "img2img", "Inpaint"])
def test_every_visible_button_has_a_name_a_screen_reader_can_say(
    studio: RunningStudio, browser: Any, tab: str
) -> None:
    page = open_studio(browser, studio.url)
    _tab(page, tab)
    page.wait_for_function(f"{UNNAMED_BUTTONS}.length === 0", timeout=10_000)
    reuse = page.locator(f"#{tab.lower()}_reuse_seed")
    assert reuse.get_attribute("title") == "Reuse the seed of the selected image"


def test_history_rows_open_their_images_with_the_result_actions(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    for prompt, seed in (("an old oak", 501), ("a red kite", 502)):
        page.fill("#txt2img_prompt textarea", prompt)
        for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64),
                            ("txt2img_seed", seed)):  # fmt: skip
            set_number(page, elem, value)
        assert generate(page, "txt2img").startswith("Done")
    _tab(page, "History")
    rows = "document.querySelectorAll('#history_table [role=gridcell][data-col=\"0\"]').length"
    page.wait_for_function(f"{rows} >= 2")
    page.click("#history_table [data-testid='cell-0-4']")  # the newest row: the kite
    page.wait_for_function("document.querySelectorAll('#history_gallery img').length === 1")
    wait_value(page, "#history_info", "a red kite")
    assert "Seed: 502" in page.input_value("#history_info textarea")

    page.click("#history_reuse")  # the job's parameters back in txt2img
    page.locator("button[role=tab][aria-selected=true]:has-text('txt2img')").wait_for()
    wait_value(page, "#txt2img_prompt", "a red kite", exact=True)
    wait_value(page, "#txt2img_seed", "502", exact=True)

    _tab(page, "History")
    page.click("#history_table [data-testid='cell-0-4']")
    page.wait_for_function("document.querySelectorAll('#history_gallery img').length === 1")
    job = next(j for j in studio.services.queue.list(limit=50) if j.request.get("prompt") == "a red kite")
    path = Path(job.images[0].path)
    assert path.is_file()
    page.click("#history_delete")  # asks first
    page.locator("#history_confirm").wait_for(state="visible")
    page.click("#history_delete_confirm")
    page.wait_for_function("document.querySelector('#history_status').innerText.includes('Deleted job')")
    assert not path.exists()
    assert all(j.id != job.id for j in studio.services.queue.list(limit=50))
