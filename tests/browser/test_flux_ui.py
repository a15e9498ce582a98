"""A tiny Flux dev model in the studio: the top bar shows "Distilled CFG Scale" and the "VAE / Text Encoder"
picker for it (and hides them for SD1), the values reach the job and its PNG, and PNG Info's "Send to
txt2img" puts them back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, open_studio, running_studio, set_number, wait_value
from tests.conftest import FLUX_DEMO
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
SLIDER = "#sf_distilled_cfg"
MODULES = "#sf_modules"


@pytest.fixture(scope="module")
def flux_studio(
    tiny_flux_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStudio]:
    with running_studio(tiny_flux_data_dir, tmp_path_factory.mktemp("flux-studio")) as srv:
        yield srv


def _choose_checkpoint(page: Any, name: str) -> None:
    page.click("#sf_checkpoint input")
    page.click(f"[role=option]:has-text('{name}')")
    wait_value(page, "#sf_checkpoint", name)


def test_flux_dev_shows_distilled_cfg_which_reaches_the_png_and_comes_back(
    flux_studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, flux_studio.url)
    _choose_checkpoint(page, "tiny-sd1.safetensors")
    page.locator(SLIDER).wait_for(state="hidden")
    page.locator(MODULES).wait_for(state="hidden")
    page.locator("#sf_model_note").wait_for(state="hidden")
    _choose_checkpoint(page, FLUX_DEMO)
    page.locator(SLIDER).wait_for(state="visible")
    page.locator(MODULES).wait_for(state="visible")
    # the demo model says in the page what it is (it draws noise), not only in the terminal
    page.locator("#sf_model_note").wait_for(state="visible")
    assert "random weights" in page.inner_text("#sf_model_note")
    assert page.get_by_label("Distilled CFG Scale").first.is_visible()
    page.click(f"{MODULES} input")
    page.click("[role=option]:text-is('ae.safetensors')")  # the split model's VAE, not the file's own
    page.keyboard.press("Escape")

    set_number(page, "sf_distilled_cfg", 4.5)
    page.fill("#txt2img_prompt textarea", "a lighthouse")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64),
                        ("txt2img_cfg", 1), ("txt2img_seed", 11)):  # fmt: skip
        set_number(page, elem, value)
    page.click("#txt2img_sampler input")
    page.click("[role=option]:text-is('Euler')")
    status = generate(page, "txt2img")
    assert status.startswith("Done"), status
    info = page.input_value("#txt2img_info textarea")
    assert "Distilled CFG Scale: 4.5" in info and "Module 1: ae" in info
    job = next(j for j in flux_studio.services.queue.list(limit=10) if j.state.value == "done")
    png = Path(job.images[0].path)
    params = parse_infotext(read_infotext(png) or "")
    assert params["Distilled CFG Scale"] == "4.5" and params["Model"] == Path(FLUX_DEMO).stem
    assert job.request["modules"] == ["ae.safetensors"] or job.request["modules"] == ("ae.safetensors",)

    set_number(page, "sf_distilled_cfg", 2)
    _choose_checkpoint(page, "tiny-sd1.safetensors")  # hides the Flux controls and empties the picker
    page.locator(MODULES).wait_for(state="hidden")
    page.click("button[role=tab]:has-text('PNG Info')")
    page.set_input_files("#pnginfo_image input[type=file]", str(png))
    wait_value(page, "#pnginfo_parameters", "Distilled CFG Scale: 4.5")
    page.click("#pnginfo_to_txt2img")
    wait_value(page, SLIDER, "4.5", exact=True)
    page.locator(SLIDER).wait_for(state="visible")
    page.locator(MODULES).wait_for(state="visible")
    wait_value(page, "#sf_checkpoint", FLUX_DEMO)
    page.wait_for_function(f"document.querySelector('{MODULES}').innerText.includes('ae.safetensors')")
