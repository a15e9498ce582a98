"""The Download panel (Models tab) in a real browser, fetching from a real 127.0.0.1 file server allowed
with --download-hosts: a progress bar, then the saved file's title; a starter only fills in its URL
(nothing is fetched without a click); a wrong hash is refused with the field's label; a token is saved
and never shown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, open_studio, running_studio
from tests.download_server import Served, serving
from webui.core.downloads.starters import STARTERS

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def files() -> Iterator[Served]:
    with serving() as s:
        yield s


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = tmp_path_factory.mktemp("downloads-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    tmp = tmp_path_factory.mktemp("downloads-studio")
    with running_studio(data, tmp, flags=["--download-hosts", "127.0.0.1"]) as srv:
        yield srv


def _open(page: Any) -> None:
    page.click("button[role=tab]:has-text('Models')")
    page.click("#downloads .label-wrap")
    page.wait_for_selector("#download_url textarea, #download_url input", state="visible")


def _url_box(page: Any) -> str:
    return "#download_url textarea, #download_url input"


def test_download_with_progress_then_the_title(
    studio: RunningStudio, browser: Any, files: Served, tiny_files: dict[str, Path]
) -> None:
    body = tiny_files["sd1"].read_bytes()
    files.files["/m/browser.safetensors"] = body
    files.slow["/m/browser.safetensors"] = 0.02
    page = open_studio(browser, studio.url)
    _open(page)
    page.fill(_url_box(page), files.base + "/m/browser.safetensors")
    page.click("#download_button")
    page.wait_for_selector("#download_status progress", timeout=30_000)
    page.wait_for_selector("#download_status .sf-download-done", timeout=60_000)
    text = page.inner_text("#download_status")
    assert "models/Stable-diffusion/browser.safetensors" in text and "browser.safetensors [" in text
    assert "could not be verified" in text  # the warning reaches the user
    assert (studio.config.ckpt_dirs[0] / "browser.safetensors").read_bytes() == body


def test_a_starter_only_fills_in_its_url(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _open(page)
    assert "4.3 GB" in page.inner_text("#download_starters") and "Apache-2.0" in page.inner_text(
        "#download_starters"
    )
    page.click("#download_starter input")
    page.click(f"[role=option]:has-text('{STARTERS[1].name}')")
    page.click("#download_use")
    page.wait_for_function(
        f"document.querySelector('#download_url textarea, #download_url input').value === {STARTERS[1].url!r}"
    )
    assert [
        j for j in studio.services.queue.list() if j.kind == "download" and "huggingface" in j.request["url"]
    ] == []


def test_a_wrong_hash_is_refused_with_its_label(
    studio: RunningStudio, browser: Any, files: Served, tiny_files: dict[str, Path]
) -> None:
    files.files["/m/wrong.safetensors"] = tiny_files["sd1"].read_bytes()
    page = open_studio(browser, studio.url)
    _open(page)
    page.fill(_url_box(page), files.base + "/m/wrong.safetensors")
    page.fill("#download_sha256 textarea, #download_sha256 input", "ab" * 32)
    page.click("#download_button")
    page.wait_for_selector("#download_status .sf-download-error", timeout=60_000)
    assert page.inner_text("#download_status").startswith("SHA-256:")
    assert not (studio.config.ckpt_dirs[0] / "wrong.safetensors").exists()


def test_a_token_is_saved_and_never_shown(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _open(page)
    page.click("#download_tokens .label-wrap")
    page.wait_for_selector("#download_tokens_state:has-text('Hugging Face token: none')")  # read at page load
    page.fill("#download_hf input", "hf_BROWSERSECRET")
    page.click("#download_save_tokens")
    page.wait_for_selector("#download_tokens_state:has-text('Hugging Face token: stored')")
    assert page.input_value("#download_hf input") == ""
    assert studio.services.settings.get("hf_token") == "hf_BROWSERSECRET"
    again = open_studio(browser, studio.url)
    assert "hf_BROWSERSECRET" not in again.content()
