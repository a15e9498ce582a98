"""The real server with the studio on 127.0.0.1, and Chromium (Debian's) driven by Playwright.

The browser tests need /usr/bin/chromium (tests/run.py installs it when it can). Without it they FAIL
with the reason: the studio's acceptance depends on them, so they are never skipped silently.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.api.app import create_app
from webui.api.services import Services
from webui.core.config import AppConfig
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.flags import parse_flags
from webui.server import bind_socket, build_options, build_services, make_server
from webui.ui.studio import Studio, build_studio

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class RunningStudio:
    url: str
    services: Services
    config: AppConfig
    studio: Studio


@contextmanager
def running_studio(
    data_dir: Path, tmp: Path, *, flags: list[str] | None = None, manager: ModelManager | None = None
) -> Iterator[RunningStudio]:
    """The whole app (API + studio + job queue) on 127.0.0.1:<free port>; stopped on exit."""
    ns = parse_flags(["--data-dir", str(data_dir), *(flags or [])])
    options = build_options(ns, auth_delay=0.0)
    config = AppConfig.for_data_dir(
        data_dir,
        outputs_dir=tmp / "outputs",
        settings_path=tmp / "config.json",
        cache_dir=tmp / "cache",
        port=0,
        download_hosts=tuple(ns.download_hosts or ()),
        civitai_url=ns.civitai_url or AppConfig.civitai_url,
    )
    if manager is None:
        manager = ModelManager(config, Precision())
        manager.refresh()
    services = build_services(config, options, manager, db_path=tmp / "jobs" / "jobs.sqlite", preview_every=1)
    studio = build_studio(services)
    app = create_app(services, studio)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the studio server did not start")
        time.sleep(0.02)
    try:
        yield RunningStudio(f"http://127.0.0.1:{port}", services, config, studio)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def sd1_data_dir(tiny_files: dict[str, Path], data: Path) -> Path:
    """`data` as a data folder holding only the tiny SD1 checkpoint (models/Stable-diffusion/tiny-sd1)."""
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_files["sd1"], data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    return data


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with "
            "`apt-get install -y chromium` (tests/run.py does this when run as root)."
        )
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_studio(browser: Any, url: str, **context_args: Any) -> Any:
    """A new page on the studio, loaded (Generate button present); JS dialogs are recorded, not shown."""
    context = browser.new_context(
        viewport=context_args.pop("viewport", {"width": 1280, "height": 900}), **context_args
    )
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    page.goto(url)
    wait_loaded(page)
    return page


def wait_loaded(page: Any, timeout: float = 60) -> None:
    """Wait until the page has read its stored state (settings, lists, top bar: webui.ui.page_load)."""
    page.wait_for_function("document.body.dataset.sfLoaded === '1'", timeout=timeout * 1000)


def reload(page: Any) -> None:
    """Reload the page and wait until it has read its stored state again."""
    page.reload()
    wait_loaded(page)


def wait_value(page: Any, selector: str, text: str, *, exact: bool = False, timeout: float = 30) -> None:
    """Wait until the first input or textarea under `selector` holds `text` (or contains it)."""
    page.wait_for_function(
        """([sel, text, exact]) => {
            const box = document.querySelector(`${sel} textarea, ${sel} input`);
            return !!box && (exact ? box.value === text : box.value.includes(text));
        }""",
        arg=[selector, text, exact],
        timeout=timeout * 1000,
    )


_SLIDER_SHOWS = (
    "([id, v]) => { const r = document.querySelector(`#${id} input[type=range]`);"
    " return !r || Math.abs(Number(r.value) - v) < 1e-9; }"
)


def set_number(page: Any, elem_id: str, value: float) -> None:
    """Type a value into a slider's or number's box and commit it. A slider typed into while it is still
    mounting (just after the click that opens its accordion) keeps its initial value: when its track
    does not show the value within 3 s, it is typed once more, as a person who saw it would."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    for _attempt in range(2):
        box.fill(str(value))
        box.press("Enter")
        try:
            page.wait_for_function(_SLIDER_SHOWS, arg=[elem_id, float(value)], timeout=3_000)
            return
        except Exception:  # a value the slider clamps or rounds never shows: as before, go on
            continue


def wait_status(
    page: Any, tab: str, words: tuple[str, ...], timeout: float = 60, *, start: bool = False
) -> str:
    """The tab's status once it contains one of `words` (with `start`: begins with one)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        texts = page.locator(f"#{tab}_status .sf-text").all_inner_texts()
        text = texts[0] if texts else ""
        if any(text.startswith(w) if start else w in text for w in words):
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"status never showed {words}; last: {text!r}")


def generate(page: Any, tab: str, timeout: float = 120) -> str:
    """Click the tab's Generate and wait for that job's final status (not an earlier job's)."""
    page.evaluate(f"document.querySelectorAll('#{tab}_status .sf-text').forEach(e => e.textContent = '')")
    page.click(f"#{tab}_generate")
    # the final status starts with these (a script's per-cell lines, "X/Y/Z plot: image 2: Done", do not)
    return wait_status(page, tab, ("Done", "Failed", "Interrupted"), timeout, start=True)
