"""The Extras tab in a real browser: txt2img -> "Send to extras" -> upscale with a model upscaler (a tiny
random Real-ESRGAN written here, loaded by the upscalers extension); the file on disk is what the model
makes, keeps the source's parameters and records the upscale. Batch files; no image is refused in words."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    sd1_data_dir,
    set_number,
)
from tests.test_ext_upscalers import basicsr_rrdb

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
MODEL = "RealESRGAN_x2plus"


@pytest.fixture(scope="module")
def studio(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = sd1_data_dir(tiny_files, tmp_path_factory.mktemp("extras-data"))
    (data / "models" / "RealESRGAN").mkdir(parents=True)
    save_file(basicsr_rrdb(scale=2), str(data / "models" / "RealESRGAN" / f"{MODEL}.safetensors"))
    with running_studio(data, tmp_path_factory.mktemp("extras-studio")) as srv:
        yield srv


def _pick(page: Any, dropdown: str, option: str) -> None:
    page.click(f"#{dropdown} input")
    page.click(f"[role=option]:has-text('{option}')")


def _extras_jobs(studio: RunningStudio) -> list[Any]:
    return [j for j in studio.services.queue.list(limit=20) if j.kind == "extras"]


def test_send_a_generated_image_to_extras_and_upscale_it_with_a_model(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a red kite")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    set_number(page, "txt2img_seed", 77)
    assert generate(page, "txt2img").startswith("Done")
    page.wait_for_selector("#txt2img_gallery img")
    source = next(j for j in studio.services.queue.list(limit=5) if j.kind == "txt2img")
    page.click("#txt2img_to_extras")
    page.wait_for_selector("#extras_image img", timeout=10_000)
    _pick(page, "extras_upscaler_1", MODEL)
    assert generate(page, "extras").startswith("Done")
    page.wait_for_selector("#extras_gallery img")
    job = _extras_jobs(studio)[0]
    out = Path(job.images[0].path)
    assert out.parent == studio.config.outputs_dir / "extras-images"
    with Image.open(source.images[0].path) as src, Image.open(out) as got:
        assert got.size == (128, 128)
        spec = studio.services.engine.extras_upscalers()[MODEL]
        direct = np.asarray(spec(src.convert("RGB"), 128, 128).convert("RGB"))
        assert np.array_equal(np.asarray(got.convert("RGB")), direct)
        assert got.text["parameters"] == source.images[0].infotext
        assert got.text["postprocessing"] == f"Postprocess upscale by: 2, Postprocess upscaler: {MODEL}"
    assert "a red kite" in page.input_value("#extras_info textarea")


def test_batch_files_scale_to_a_size(studio: RunningStudio, browser: Any, tmp_path: Path) -> None:
    files = []
    for i, size in enumerate(((40, 20), (20, 40))):
        path = tmp_path / f"in-{i}.png"
        Image.new("RGB", size, (40 * i, 100, 200)).save(path)
        files.append(str(path))
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Extras')")
    page.click("button[role=tab]:has-text('Batch')")
    page.set_input_files("#extras_batch input[type=file]", files)
    page.wait_for_function("document.querySelectorAll('#extras_batch td.filename').length === 2")
    page.click("#extras_resize_mode label:has-text('Scale to')")
    set_number(page, "extras_upscaling_resize_w", 48)
    set_number(page, "extras_upscaling_resize_h", 32)
    _pick(page, "extras_upscaler_1", "Nearest")
    assert generate(page, "extras").startswith("Done")
    job = _extras_jobs(studio)[0]
    sizes = []
    for image in job.images:
        with Image.open(image.path) as im:
            sizes.append(im.size)
    assert sizes == [(48, 32), (48, 32)]
    page.wait_for_function("document.querySelectorAll('#extras_gallery img').length >= 2")


def test_a_bad_value_names_the_field_and_runs_nothing(studio: RunningStudio, browser: Any) -> None:
    before = len(_extras_jobs(studio))
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Extras')")
    page.click("#extras_generate")  # no image given
    page.wait_for_function("document.querySelector('#extras_status').innerText.includes('drop an image')")
    assert "image: drop an image to upscale" in page.inner_text("#extras_status")
    assert len(_extras_jobs(studio)) == before


def _options(page: Any, dropdown: str) -> list[str]:
    page.click(f"#{dropdown} input")
    page.wait_for_selector("[role=option]")
    names = [t.strip() for t in page.locator("[role=option]").all_inner_texts()]
    page.keyboard.press("Escape")
    return names


def _wait_listed(page: Any, dropdown: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in (names := _options(page, dropdown)):
        assert time.monotonic() < deadline, f"{name} never listed in {dropdown}: {names}"
        page.wait_for_timeout(200)


def test_refresh_lists_an_upscaler_model_added_while_the_studio_runs(
    studio: RunningStudio, browser: Any
) -> None:
    """A model file dropped into models/ESRGAN after start: Extras' Refresh upscalers and the SD upscale
    script's ↻ both list it, and the Extras upscale runs it."""
    added = "4x-AddedLater"
    folder = studio.config.data_dir / "models" / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(basicsr_rrdb(scale=4), str(folder / f"{added}.safetensors"))
    try:
        page = open_studio(browser, studio.url)
        script = "txt2img_script_sd_upscale_upscaler_index"
        page.click("#txt2img_script input")
        page.click("[role=option]:has-text('SD upscale')")
        page.locator(f"#{script}").wait_for(state="visible")
        assert added not in _options(page, script)  # the page was built before the file came
        page.click(f"#{script}_refresh")
        _wait_listed(page, script, added)

        page.click("button[role=tab]:has-text('Extras')")
        page.click("#extras_refresh")
        _wait_listed(page, "extras_upscaler_1", added)
        assert added in studio.services.engine.extras_upscalers()
    finally:
        (folder / f"{added}.safetensors").unlink()
        studio.services.engine.hooks.rescan_upscalers()
