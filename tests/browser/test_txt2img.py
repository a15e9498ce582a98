"""txt2img in a real browser against the real server: generate, interrupt, reload, phone, escaping."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    set_number,
    wait_status,
    wait_value,
)
from webui.core.outputs.saving import read_infotext

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
XSS = "<img src=x onerror=alert(1)>"


def _small(page: Any, steps: int = 3, size: int = 64) -> None:
    set_number(page, "txt2img_steps", steps)
    set_number(page, "txt2img_width", size)
    set_number(page, "txt2img_height", size)


def _choose_checkpoint(page: Any, name: str) -> None:
    page.click("#sf_checkpoint input")
    page.click(f"[role=option]:has-text('{name}')")


def _jobs(studio: RunningStudio, owner: str | None = None) -> list[Any]:
    return studio.services.queue.list(owner=owner, limit=100)


def test_generate_shows_images_in_gallery_and_writes_them_to_disk(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    before = {j.id for j in _jobs(studio)}
    page.fill("#txt2img_prompt textarea", "a red apple on a table")
    _small(page)
    set_number(page, "txt2img_seed", 1234)
    set_number(page, "txt2img_batch_size", 2)
    _choose_checkpoint(page, "tiny-sd1.safetensors")
    status = generate(page, "txt2img")
    assert status.startswith("Done") and "2 images" in status, status
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 2")
    info = page.input_value("#txt2img_info textarea")
    assert info.startswith("a red apple on a table") and "Seed: 1234" in info and "Model: tiny-sd1," in info
    new = [j for j in _jobs(studio) if j.id not in before]
    assert (
        len(new) == 1 and new[0].state.value == "done" and new[0].owner.startswith("browser-")
    )  # the page's own identity
    paths = [Path(i.path) for i in new[0].images]
    assert len(paths) == 2 and all(p.is_file() and p.is_relative_to(studio.config.outputs_dir) for p in paths)
    assert [i.seed for i in new[0].images] == [1234, 1235]
    text = read_infotext(paths[1])
    assert text is not None and "Seed: 1235" in text and "Steps: 3" in text
    with Image.open(paths[0]) as im:
        assert im.size == (64, 64)
    assert page.inner_text("#txt2img_prompt_tokens").strip() == "6/75"


def test_interrupt_stops_a_long_job_quickly(studio: RunningStudio, browser: Any) -> None:
    """While a job runs, Generate gives way to Interrupt/Skip and the window title shows the progress;
    Interrupt says so until the job stops, and keeps the partly finished picture."""
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a long job")
    _small(page, steps=150, size=256)
    set_number(page, "txt2img_batch_count", 3)
    assert page.title() == "Sfumato"
    page.click("#txt2img_generate")
    wait_status(page, "txt2img", ("step",), timeout=60)
    page.wait_for_function("/^\\[\\d+%\\]/.test(document.title)", timeout=10_000)
    assert not page.is_visible("#txt2img_generate") and page.is_visible("#txt2img_interrupt")
    job = next(j for j in _jobs(studio) if j.state.value == "running")
    started = time.monotonic()
    page.click("#txt2img_interrupt")
    wait_status(page, "txt2img", ("Interrupting", "Interrupted"), timeout=10, start=True)
    page.wait_for_timeout(600)  # several polls later it still says so (or the job has ended)
    text = page.locator("#txt2img_status .sf-text").inner_text()
    assert text.startswith(("Interrupting", "Interrupted")), text
    status = wait_status(page, "txt2img", ("Interrupted", "Done", "Failed"), timeout=30, start=True)
    assert status.startswith("Interrupted") and "1 image kept" in status, status
    assert time.monotonic() - started < 10
    final = studio.services.queue.get(job.id)
    assert final.state.value == "cancelled" and final.progress.step < 150
    assert len(final.images) == 1 and Path(final.images[0].path).is_file()  # the partial picture
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 1")
    page.wait_for_function("document.title === 'Sfumato'", timeout=10_000)
    assert page.is_visible("#txt2img_generate")


def test_escape_interrupts_the_shown_tabs_job(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "stopped by a key")
    _small(page, steps=150, size=256)
    page.click("#txt2img_generate")
    wait_status(page, "txt2img", ("step",), timeout=60)
    page.keyboard.press("Escape")
    status = wait_status(page, "txt2img", ("Interrupted", "Done", "Failed"), timeout=30, start=True)
    assert status.startswith("Interrupted"), status


def test_reload_mid_job_reattaches_to_the_same_job(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "survives a reload")
    _small(page, steps=60, size=128)
    set_number(page, "txt2img_batch_count", 2)
    page.click("#txt2img_generate")
    wait_status(page, "txt2img", ("step",), timeout=60)
    ours = [j for j in _jobs(studio) if not j.state.finished]
    assert len(ours) == 1
    page.reload()
    page.wait_for_selector("#txt2img_generate")
    status = wait_status(page, "txt2img", ("step", "Done"), timeout=30)  # streaming again, no click
    assert "step" in status or status.startswith("Done")
    status = wait_status(page, "txt2img", ("Done", "Failed", "Interrupted"), timeout=120)
    assert status.startswith("Done"), status
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 2")
    assert "survives a reload" in page.input_value("#txt2img_info textarea")
    assert studio.services.queue.get(ours[0].id).state.value == "done"
    assert not [j for j in _jobs(studio) if j.created > ours[0].created]  # the reload submitted nothing


def test_another_users_job_id_in_the_browser_is_not_reattached(studio: RunningStudio, browser: Any) -> None:
    from webui.core.types import Txt2ImgRequest

    other = studio.services.queue.submit(
        Txt2ImgRequest(prompt="not yours", steps=2, width=64, height=64, checkpoint="tiny-sd1"),
        owner="mallory",
    )
    studio.services.queue.wait(other.id, timeout=60)
    ctx = studio.studio.context
    assert (
        ctx.job_for("anonymous", other.id) is None or ctx.job_for("anonymous", other.id).owner == "anonymous"
    )
    assert ctx.active_job_id("anonymous", other.id) is None


def test_phone_viewport_shows_generate_without_sideways_scrolling(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(
        browser, studio.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    button = page.locator("#txt2img_generate")
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert box["y"] >= 0 and box["y"] + box["height"] <= 844
    scroll = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll[0] <= scroll[1] <= 390, scroll


def test_markup_in_a_prompt_and_in_infotext_renders_as_text(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", f"cat {XSS}")
    page.fill("#txt2img_neg_prompt textarea", XSS)
    _small(page, steps=2)
    assert generate(page, "txt2img").startswith("Done")
    wait_value(page, "#txt2img_info", XSS)
    assert page.locator("img[src='x']").count() == 0
    assert page.dialogs == []


@pytest.fixture(scope="module")
def xss_data_dir(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("xss-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    shutil.copy(tiny_files["sd1"], data / "models" / "Stable-diffusion" / f"{XSS}.safetensors")
    return data


def test_markup_in_a_model_file_name_renders_as_text(
    xss_data_dir: Path, tmp_path: Path, browser: Any
) -> None:
    with running_studio(xss_data_dir, tmp_path) as srv:
        page = open_studio(browser, srv.url)
        assert XSS in page.input_value("#sf_checkpoint input")
        page.fill("#txt2img_prompt textarea", "escaped")
        _small(page, steps=2)
        assert generate(page, "txt2img").startswith("Done")
        wait_value(page, "#txt2img_info", f"Model: {XSS}")
        assert page.locator("img[src='x']").count() == 0
        assert page.dialogs == []


def test_hires_fix_shows_the_size_it_will_make(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    set_number(page, "txt2img_width", 256)
    set_number(page, "txt2img_height", 128)
    page.click("#txt2img_hires button, #txt2img_hires .label-wrap")
    set_number(page, "txt2img_hr_scale", 1.5)
    shows = "(t) => document.querySelector('#txt2img_hr_target').innerText.includes(t)"
    page.wait_for_function(shows, arg="from 256x128 to 384x192", timeout=10_000)
    set_number(page, "txt2img_hr_resize_x", 512)  # one side given: the other keeps the aspect ratio
    page.wait_for_function(shows, arg="to 512x256", timeout=10_000)
