"""The Gallery tab in a real browser: search the outputs, open an image's infotext, reuse it, delete it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, open_studio, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _tab(page: Any, name: str) -> None:
    page.click(f"button[role=tab]:has-text('{name}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{name}')").wait_for()


def _made(studio: RunningStudio, prompt: str, seed: int) -> Path:
    from webui.core.types import Txt2ImgRequest

    request = Txt2ImgRequest(prompt=prompt, steps=2, width=64, height=64, seed=seed, checkpoint="tiny-sd1")
    job = studio.services.queue.submit(request, owner="someone")
    done = studio.services.queue.wait(job.id, timeout=120)
    assert done.state.value == "done"
    return Path(done.images[0].path)


def test_gallery_searches_opens_reuses_and_deletes(studio: RunningStudio, browser: Any) -> None:
    kept = _made(studio, "a lighthouse in a storm", 611)
    _made(studio, "a quiet meadow", 612)
    page = open_studio(browser, studio.url)
    _tab(page, "Gallery")
    page.wait_for_function("document.querySelectorAll('#gallery_images img').length >= 2")
    page.fill("#gallery_query textarea, #gallery_query input", "lighthouse storm")
    page.click("#gallery_search")
    page.wait_for_function("document.querySelectorAll('#gallery_images img').length === 1")
    wait_value(page, "#gallery_info", "a lighthouse in a storm")
    assert "Seed: 611" in page.input_value("#gallery_info textarea")

    page.click("#gallery_reuse")
    page.locator("button[role=tab][aria-selected=true]:has-text('txt2img')").wait_for()
    wait_value(page, "#txt2img_prompt", "a lighthouse in a storm", exact=True)
    wait_value(page, "#txt2img_seed", "611", exact=True)

    _tab(page, "Gallery")
    page.wait_for_function("document.querySelectorAll('#gallery_images img').length === 1")
    page.click("#gallery_delete")
    page.locator("#gallery_confirm").wait_for(state="visible")
    page.click("#gallery_delete_confirm")
    page.wait_for_function("document.querySelector('#gallery_status').innerText.includes('trash')")
    assert not kept.exists()
    assert (studio.services.config.outputs_dir / ".trash").is_dir()
    page.wait_for_function("document.querySelectorAll('#gallery_images img').length === 0")
