"""The studio behind --gradio-auth in a real browser: anonymous pages are blocked, the login page works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, generate, running_studio, set_number

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def locked(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    tmp = tmp_path_factory.mktemp("locked")
    with running_studio(tiny_data_dir, tmp, flags=["--gradio-auth", "ann:s3cret,bob:hunter2"]) as srv:
        yield srv


def test_anonymous_browser_gets_the_login_page_not_the_studio(locked: RunningStudio, browser: Any) -> None:
    page = browser.new_page()
    response = page.goto(locked.url)
    assert response is not None and "/login-sfumato" in page.url
    assert page.locator("#txt2img_generate").count() == 0
    assert page.locator("#password").count() == 1
    # the studio's own routes answer nothing either
    for path in ("/config", "/gradio_api/info", "/gradio_api/queue/join"):
        r = page.request.get(locked.url + path, headers={"Accept": "application/json"})
        assert r.status == 401, path
    page.fill("#username", "ann")
    page.fill("#password", "wrong")
    page.click("#login")
    assert "Wrong user name or password" in page.content()
    assert page.locator("#txt2img_generate").count() == 0
    page.close()


def test_login_page_then_generate_as_that_user(locked: RunningStudio, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.dialogs = []
    page.goto(locked.url)
    login_bg = page.evaluate("getComputedStyle(document.querySelector('#login')).backgroundColor")
    page.fill("#username", "ann")
    page.fill("#password", "s3cret")
    page.click("#login")
    page.wait_for_selector("#txt2img_generate", timeout=60_000)
    # the login page looked like the studio: its button is the studio's Generate orange (AA with white)
    generate_bg = page.evaluate(
        "getComputedStyle(document.querySelector('#txt2img_generate')).backgroundColor"
    )
    assert login_bg == generate_bg == "rgb(194, 65, 12)", (login_bg, generate_bg)
    cookie = next(c for c in context.cookies() if c["name"] == "sfumato_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.fill("#txt2img_prompt textarea", "ann's apple")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    assert generate(page, "txt2img").startswith("Done")
    jobs = locked.services.queue.list(owner="ann", limit=5)
    assert jobs and jobs[0].request["prompt"] == "ann's apple"
    assert not locked.services.queue.list(owner="anonymous", limit=5)
    context.close()


def _login(browser: Any, url: str, user: str, password: str) -> Any:
    from tests.browser.harness import wait_loaded

    page = browser.new_context(color_scheme="light").new_page()
    page.goto(url)
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login")
    wait_loaded(page)
    return page


def _ui_section(page: Any) -> None:
    page.click("button[role=tab]:has-text('Settings')")
    page.click("#settings_theme_and_ui_defaults button:has-text('Theme and UI defaults')")
    page.locator("#settings_theme").wait_for(state="visible")


def test_each_user_keeps_their_own_theme_and_only_admins_set_ui_defaults(
    locked: RunningStudio, browser: Any
) -> None:
    import json

    ann = _login(browser, locked.url, "ann", "s3cret")
    _ui_section(ann)
    ann.locator("#settings_theme label:has-text('Dark')").click()
    ann.wait_for_function("document.body.classList.contains('dark')", timeout=10_000)
    users = locked.config.settings_path.parent / "ui-users.json"
    for _ in range(50):
        if users.exists() and "ann" in json.loads(users.read_text())["users"]:
            break
        ann.wait_for_timeout(100)
    assert json.loads(users.read_text())["users"]["ann"] == {"theme": "dark"}
    # bob, in another browser, keeps the default (the system's: light here)
    bob = _login(browser, locked.url, "bob", "hunter2")
    assert not bob.evaluate("document.body.classList.contains('dark')")
    # ann in a fresh browser gets hers from the server
    ann2 = _login(browser, locked.url, "ann", "s3cret")
    assert ann2.evaluate("document.body.classList.contains('dark')")
    # neither is an admin here: the shared ui-config.json is not theirs to change
    _ui_section(bob)
    bob.click("#settings_ui_defaults")
    bob.wait_for_function(
        "document.querySelector('#settings_ui_defaults_result textarea').value.startsWith('Not saved')",
        timeout=20_000,
    )
    assert "only an admin" in bob.input_value("#settings_ui_defaults_result textarea")
    assert not (locked.config.settings_path.parent / "ui-config.json").exists()
    # a shared setting in the quicksettings row is read-only for a non-admin
    from tests.browser.harness import reload

    before = locked.services.settings.get("quicksettings_list")
    locked.services.settings.update({"quicksettings_list": [*before, "samples_format"]})
    try:
        reload(bob)
        box = bob.locator("#qs_samples_format textarea, #qs_samples_format input").first
        box.wait_for(state="visible")
        assert box.is_disabled() and box.input_value() == "png"
    finally:
        locked.services.settings.update({"quicksettings_list": before})
    for page in (ann, bob, ann2):
        page.context.close()
