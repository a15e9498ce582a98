"""WCAG AA contrast of the main tabs in light and dark themes (labels, placeholders, the selected tab,
Generate), and keyboard use: Tab through the top bar leaves no dropdown open."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.contrast import AUDIT_JS
from tests.browser.harness import RunningStudio, open_studio

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

MAIN_TABS = ("txt2img", "img2img", "Inpaint", "Extras", "PNG Info")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_main_tabs_text_meets_wcag_aa_contrast(studio: RunningStudio, browser: Any, scheme: str) -> None:
    page = open_studio(browser, studio.url, color_scheme=scheme)
    dark = page.evaluate("document.body.classList.contains('dark')")
    assert dark == (scheme == "dark")
    failures: list[str] = []
    for tab in MAIN_TABS:
        page.click(f"#sf_tabs button[role=tab]:has-text('{tab}')")
        page.wait_for_function(
            "(t) => [...document.querySelectorAll('#sf_tabs button[role=tab]')]"
            ".some(b => b.getAttribute('aria-selected') === 'true' && b.innerText.trim() === t)",
            arg=tab,
        )
        page.wait_for_function(  # the tab's content is drawn: its panel is visible and has labels
            "() => [...document.querySelectorAll('[role=tabpanel]')]"
            ".some(p => p.offsetParent !== null && p.querySelector('label'))"
        )
        for f in page.evaluate(AUDIT_JS, ".gradio-container"):
            failures.append(
                f"{tab}: {f['what']} {f['text']!r} at {f['where']}: {f['ratio']} ({f['fg']} on {f['bg']})"
            )
    # the audit covers what the issue measured: slider labels, placeholders, the selected tab, Generate
    assert not sorted(set(failures)), "\n".join(sorted(set(failures)))
    page.context.close()


OPEN_LISTS_ELSEWHERE = """() => [...document.querySelectorAll('[role=listbox]')]
    .filter(l => l.offsetParent !== null && l.getBoundingClientRect().height > 0)
    .filter(l => !document.activeElement || document.activeElement.getAttribute('aria-controls') !== l.id)
    .map(l => (l.closest('[id^="sf_"], [id$="_sampler"], [id]') || {}).id || l.id)"""
FOCUSED = "() => { const a = document.activeElement; return (a.closest('[id]') || {}).id || a.tagName; }"


def test_tab_through_the_top_bar_closes_each_dropdown_and_a_slider_is_one_stop(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    page.focus("#sf_checkpoint input")
    assert page.evaluate(OPEN_LISTS_ELSEWHERE) == []
    stops: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        page.wait_for_timeout(150)  # a list that would stay open has had time to show
        where = page.evaluate(FOCUSED)
        open_lists = page.evaluate(OPEN_LISTS_ELSEWHERE)
        assert open_lists == [], (where, open_lists)  # only the focused dropdown shows its list
        stops.append(where)
        if where.startswith("tab_"):
            break
    # checkpoint -> refresh -> VAE -> Clip skip's number box -> the tabs: one stop for the slider
    assert stops[:3] == ["sf_refresh", "sf_vae", "sf_clip_skip"] and stops[3].startswith("tab_"), stops
    page.click("#sf_tabs button[role=tab]:has-text('txt2img')")
    page.focus("#txt2img_steps input[type=number]")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_steps input[type=range]').tabIndex === -1", timeout=5_000
    )
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) != "txt2img_steps"  # the range and reset button are not stops
    page.context.close()
