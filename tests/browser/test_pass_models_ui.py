"""The hires checkpoint picker and the Refiner accordion in a real browser, on two tiny SD1 checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    set_number,
    wait_status,
    wait_value,
)
from tests.test_pass_models import two_sd1_data_dir

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def two_sd1(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = two_sd1_data_dir(tiny_files, tmp_path_factory.mktemp("two-sd1"))
    with running_studio(data, tmp_path_factory.mktemp("two-sd1-studio")) as srv:
        yield srv


def _choose(page: Any, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.click(f"[role=option]:has-text('{option}')")


def test_hires_on_another_checkpoint_then_the_refiner(two_sd1: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, two_sd1.url)
    _choose(page, "sf_checkpoint", "tiny-sd1.safetensors")
    page.fill("#txt2img_prompt textarea", "a red apple")
    for name, value in (("steps", 2), ("width", 64), ("height", 64), ("seed", 5)):
        set_number(page, f"txt2img_{name}", value)
    page.click("#txt2img_hires button, #txt2img_hires .label-wrap")
    page.check("#txt2img_enable_hr input")
    set_number(page, "txt2img_hr_scale", 1.5)
    _choose(page, "txt2img_hr_checkpoint", "tiny-sd1-b.safetensors")
    page.click("#txt2img_refiner button, #txt2img_refiner .label-wrap")
    _choose(page, "txt2img_refiner_checkpoint", "tiny-sd1.safetensors")
    set_number(page, "txt2img_refiner_switch_at", 0.5)
    status = generate(page, "txt2img")
    assert status.startswith("Done"), status
    wait_value(page, "#txt2img_info", "Hires checkpoint: tiny-sd1-b")
    info = page.input_value("#txt2img_info textarea")
    assert "Refiner: tiny-sd1" in info and "Refiner switch at: 0.5" in info, info
    # a refiner of another family is refused with the field named, before the job runs
    _choose(page, "txt2img_refiner_checkpoint", "tiny-sdxl.safetensors")
    page.click("#txt2img_generate")
    status = wait_status(page, "txt2img", ("Refiner checkpoint:",), start=True)
    assert "same architecture" in status, status
