"""The Checkpoint merger panel (Models tab) in a real browser: pick A and B, Merge, watch it finish; the
new checkpoint is written, mixes its sources, and appears in the top bar's list after ↻. A bad name is
refused with the field's label and nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.browser.harness import RunningStudio, open_studio, running_studio
from webui.core.models.checkpoint_file import load_state_dict
from webui.core.models.tiny import build_tiny, save_single_file

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
KEY = "model.diffusion_model.out.2.weight"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = tmp_path_factory.mktemp("merger-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for name, seed in (("alpha", 1), ("beta", 2)):
        save_single_file(build_tiny("sd1", seed=seed), ckpts / f"{name}.safetensors")
    with running_studio(data, tmp_path_factory.mktemp("merger-studio")) as srv:
        yield srv


def _pick(page: Any, dropdown: str, option: str) -> None:
    page.click(f"#{dropdown} input")
    page.click(f"[role=option]:has-text('{option}')")


def _open_merger(page: Any) -> None:
    page.click("button[role=tab]:has-text('Models')")
    page.click("#merger .label-wrap")
    page.wait_for_selector("#merge_primary input", state="visible")


def test_merge_two_checkpoints_in_the_browser(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _open_merger(page)
    _pick(page, "merge_primary", "alpha")
    _pick(page, "merge_secondary", "beta")
    page.fill("#merge_name textarea, #merge_name input", "blend")
    page.click("#merge_button")
    page.wait_for_selector("#merge_status .sf-merge-done", timeout=60_000)
    assert "blend.safetensors" in page.inner_text("#merge_status")
    folder = studio.config.ckpt_dirs[0]
    a, b, m = (load_state_dict(folder / f"{n}.safetensors") for n in ("alpha", "beta", "blend"))
    torch.testing.assert_close(m[KEY], a[KEY] * 0.7 + b[KEY] * 0.3, rtol=0, atol=1e-6)
    page.click("#sf_refresh")
    page.click("#sf_checkpoint input")
    page.wait_for_selector("[role=option]:has-text('blend.safetensors')")


def test_a_name_that_exists_is_refused_with_its_label(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    _open_merger(page)
    _pick(page, "merge_primary", "alpha")
    _pick(page, "merge_secondary", "beta")
    page.fill("#merge_name textarea, #merge_name input", "alpha")
    before = sorted(p.name for p in Path(studio.config.ckpt_dirs[0]).iterdir())
    page.click("#merge_button")
    page.wait_for_selector("#merge_status .sf-merge-error")
    text = page.inner_text("#merge_status")
    assert text.startswith("Custom name:") and "already exists" in text
    assert sorted(p.name for p in Path(studio.config.ckpt_dirs[0]).iterdir()) == before
