"""A reload keeps the user's work: the tab opens with the prompt and settings of the user's last job
(A1111's "read last generation parameters"); another browser (another user) still sees the defaults."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, open_studio, reload, set_number, wait_value

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _number(page: Any, elem_id: str) -> str:
    return page.input_value(f"#{elem_id} input[type=number]")  # type: ignore[no-any-return]


def test_reload_restores_the_last_jobs_prompt_and_settings(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a lighthouse at dawn")
    page.fill("#txt2img_neg_prompt textarea", "fog")
    for elem, value in (
        ("txt2img_steps", 3),
        ("txt2img_width", 64),
        ("txt2img_height", 96),
        ("txt2img_cfg", 5.5),
        ("txt2img_seed", 77),
    ):
        set_number(page, elem, value)
    assert generate(page, "txt2img").startswith("Done")
    page.fill("#txt2img_prompt textarea", "typed after the job, not kept")
    reload(page)
    wait_value(page, "#txt2img_prompt", "a lighthouse at dawn", exact=True)
    assert page.input_value("#txt2img_neg_prompt textarea") == "fog"
    got = [_number(page, e) for e in ("txt2img_steps", "txt2img_width", "txt2img_height", "txt2img_cfg")]
    assert got == ["3", "64", "96", "5.5"], got
    assert _number(page, "txt2img_seed") == "77"
    other = open_studio(browser, studio.url)  # another browser: another identity, nothing to restore
    assert other.input_value("#txt2img_prompt textarea") == ""
    assert _number(other, "txt2img_steps") == "20"
    other.context.close()
    page.context.close()
