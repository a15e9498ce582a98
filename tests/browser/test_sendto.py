"""Send to img2img / inpaint carries the selected image's parameters; ♻️ takes the selected image's seed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, open_studio, set_number, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _pick(page: Any, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.click(f"[role=option]:text-is('{option}')")
    wait_value(page, f"#{elem_id}", option, exact=True)


def _number(page: Any, elem_id: str) -> float:
    return float(page.input_value(f"#{elem_id} input[type=number], #{elem_id} input"))


def _tab(page: Any, name: str) -> None:
    page.click(f"button[role=tab]:has-text('{name}')")
    page.locator(f"button[role=tab][aria-selected=true]:has-text('{name}')").wait_for()


def _assert_carried(page: Any, tab: str) -> None:
    wait_value(page, f"#{tab}_seed", "4322", exact=True)  # the second image's seed, not the first's
    assert page.input_value(f"#{tab}_prompt textarea") == "a lighthouse at dusk"
    assert page.input_value(f"#{tab}_neg_prompt textarea") == "fog, blur"
    assert page.input_value(f"#{tab}_sampler input") == "Euler"
    assert page.input_value(f"#{tab}_scheduler input") == "Karras"
    assert _number(page, f"{tab}_steps") == 3
    assert _number(page, f"{tab}_cfg") == 5.5
    assert (_number(page, f"{tab}_width"), _number(page, f"{tab}_height")) == (64, 80)


def test_send_to_carries_the_selected_images_parameters(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a lighthouse at dusk")
    page.fill("#txt2img_neg_prompt textarea", "fog, blur")
    _pick(page, "txt2img_sampler", "Euler")
    _pick(page, "txt2img_scheduler", "Karras")
    for elem, value in (
        ("txt2img_steps", 3), ("txt2img_cfg", 5.5), ("txt2img_width", 64), ("txt2img_height", 80),
        ("txt2img_seed", 4321), ("txt2img_batch_size", 2),
    ):  # fmt: skip
        set_number(page, elem, value)
    assert generate(page, "txt2img").startswith("Done")
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 2")
    page.locator("#txt2img_gallery .thumbnail-item").nth(1).click()
    wait_value(page, "#txt2img_info", "Seed: 4322")

    set_number(page, "txt2img_seed", -1)
    page.click("#txt2img_reuse_seed")
    wait_value(page, "#txt2img_seed", "4322", exact=True)

    page.click("#txt2img_to_img2img")
    page.locator("button[role=tab][aria-selected=true]:has-text('img2img')").wait_for()
    page.wait_for_selector("#img2img_image img")
    _assert_carried(page, "img2img")

    _tab(page, "txt2img")
    page.click("#txt2img_to_inpaint")
    page.locator("button[role=tab][aria-selected=true]:has-text('Inpaint')").wait_for()
    _assert_carried(page, "inpaint")
