"""Face restoration in a real browser: Extras restores the astronaut's face with CodeFormer's sliders,
and txt2img's "Restore faces" checkbox reaches the job and its infotext. The face network is the tiny
CodeFormer of tests/fixtures_faces.py in the data folder's models/Codeformer, loaded by the app itself
(no spandrel): nothing stands in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    sd1_data_dir,
    set_number,
)
from tests.fixtures_faces import face_models
from webui.core.faces import restorers
from webui.core.outputs.infotext import parse_infotext

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def studio(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = sd1_data_dir(tiny_files, tmp_path_factory.mktemp("faces-data"))
    face_models(data / "models", codeformer=True)
    with running_studio(data, tmp_path_factory.mktemp("faces-studio")) as srv:
        yield srv


def _jobs(studio: RunningStudio, kind: str) -> list[Any]:
    return [j for j in studio.services.queue.list(limit=20) if j.kind == kind]


def test_extras_restores_the_face_with_codeformer(
    studio: RunningStudio, browser: Any, tmp_path: Path, astronaut: Image.Image
) -> None:
    source = tmp_path / "astronaut.png"
    astronaut.save(source)
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Extras')")
    page.set_input_files("#extras_image input[type=file]", str(source))
    page.wait_for_selector("#extras_image img", timeout=10_000)
    page.click("#extras_upscaler_1 input")
    page.click("[role=option]:has-text('None')")
    page.click("#extras_faces button:has-text('Restore faces')")
    set_number(page, "extras_codeformer_visibility", 1)
    set_number(page, "extras_codeformer_weight", 0.3)
    assert generate(page, "extras").startswith("Done")
    job = _jobs(studio, "extras")[0]
    net = studio.services.engine.faces.net("CodeFormer", "codeformer_visibility")
    expected = restorers.restore(Image.open(source), net, weight=0.3)
    with Image.open(job.images[0].path) as got:
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
        assert not np.array_equal(np.asarray(got.convert("RGB")), np.asarray(astronaut))
        assert got.text["postprocessing"] == "CodeFormer visibility: 1, CodeFormer weight: 0.3"


def test_txt2img_restore_faces_checkbox_reaches_the_job(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a portrait")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    page.click("#txt2img_restore_faces input[type=checkbox]")
    assert generate(page, "txt2img").startswith("Done")
    job = _jobs(studio, "txt2img")[0]
    assert job.request["restore_faces"] is True
    assert parse_infotext(job.images[0].infotext)["Face restoration"] == "CodeFormer"


def test_the_settings_tab_turns_on_the_copy_before_face_restoration(
    studio: RunningStudio, browser: Any
) -> None:
    """ "Save a copy of image before doing face restoration." sits in Saving images; once applied, a
    txt2img with Restore faces writes the copy (A1111's name and infotext) before the image."""
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Settings')")
    box = page.locator("#settings_saving_images").get_by_label(
        "Save a copy of image before doing face restoration. (save_images_before_face_restoration)"
    )
    assert not box.is_checked()
    box.check()
    page.click("#settings_apply")
    page.wait_for_function(
        "document.querySelector('#settings_result textarea, #settings_result input')"
        ".value.startsWith('Saved')"
    )
    store = studio.services.settings
    assert store.get("save_images_before_face_restoration") is True
    try:
        page = open_studio(browser, studio.url)
        page.fill("#txt2img_prompt textarea", "a portrait")
        for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
            set_number(page, elem, value)
        page.click("#txt2img_restore_faces input[type=checkbox]")
        assert generate(page, "txt2img").startswith("Done")
    finally:
        store.update({"save_images_before_face_restoration": False})
    job = _jobs(studio, "txt2img")[0]
    final = Path(job.images[0].path)
    number, seed = final.stem.split("-")
    copy = final.with_name(f"{int(number) - 1:05}-{seed}-before-face-restoration.png")
    assert copy.is_file(), sorted(p.name for p in final.parent.iterdir())
    with Image.open(copy) as im:
        assert parse_infotext(im.text["parameters"]) == parse_infotext(job.images[0].infotext)
