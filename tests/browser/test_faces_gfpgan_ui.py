"""GFPGAN in a real browser, with nothing standing in: a tiny GFPGAN file (tests/fixtures_faces.py) in the
data folder's models/GFPGAN, loaded by the app's own architecture. The Extras tab restores the astronaut's
face with the GFPGAN visibility slider; txt2img's "Restore faces" with the GFPGAN setting reaches the job
and its infotext; a models/GFPGAN file that is not a GFPGAN is named in the status at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    running_studio,
    sd1_data_dir,
    set_number,
    wait_status,
)
from tests.fixtures_faces import write_tiny_gfpgan
from webui.core.faces import restorers
from webui.core.outputs.infotext import parse_infotext

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def studio(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    data = sd1_data_dir(tiny_files, tmp_path_factory.mktemp("gfpgan-data"))
    write_tiny_gfpgan(data / "models" / "GFPGAN" / "GFPGANv1.4.pth")
    with running_studio(data, tmp_path_factory.mktemp("gfpgan-studio"), flags=["--api"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("gfpgan-photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def _jobs(studio: RunningStudio, kind: str) -> list[Any]:
    return [j for j in studio.services.queue.list(limit=20) if j.kind == kind]


def _extras_with_gfpgan(page: Any, source: Path, visibility: float) -> None:
    page.click("button[role=tab]:has-text('Extras')")
    page.set_input_files("#extras_image input[type=file]", str(source))
    page.wait_for_selector("#extras_image img", timeout=10_000)
    page.click("#extras_upscaler_1 input")
    page.click("[role=option]:has-text('None')")
    page.click("#extras_faces button:has-text('Restore faces')")
    set_number(page, "extras_gfpgan_visibility", visibility)


def test_extras_restores_the_face_with_gfpgan(studio: RunningStudio, browser: Any, source: Path) -> None:
    page = open_studio(browser, studio.url)
    _extras_with_gfpgan(page, source, 0.8)
    assert generate(page, "extras").startswith("Done")
    job = _jobs(studio, "extras")[0]
    net = studio.services.engine.faces.net("GFPGAN", "gfpgan_visibility")
    expected = restorers.restore(Image.open(source), net, visibility=0.8)
    with Image.open(job.images[0].path) as got:
        out = np.asarray(got.convert("RGB"))
        assert got.text["postprocessing"] == "GFPGAN visibility: 0.8"
    assert np.array_equal(out, np.asarray(expected))
    assert not np.array_equal(out, np.asarray(Image.open(source).convert("RGB")))


def test_txt2img_restore_faces_with_gfpgan_reaches_the_infotext(studio: RunningStudio, browser: Any) -> None:
    r = httpx.post(f"{studio.url}/sdapi/v1/options", json={"face_restoration_model": "GFPGAN"})
    assert r.status_code == 200, r.text
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a portrait")
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    page.click("#txt2img_restore_faces input[type=checkbox]")
    assert generate(page, "txt2img").startswith("Done")
    job = _jobs(studio, "txt2img")[0]
    assert job.request["restore_faces"] is True and job.request["face_restoration_model"] == "GFPGAN"
    assert parse_infotext(job.images[0].infotext)["Face restoration"] == "GFPGAN"


def test_a_file_that_is_not_a_gfpgan_is_named_at_once(
    studio: RunningStudio, browser: Any, source: Path
) -> None:
    folder = studio.services.engine.faces.folder("GFPGAN")
    bad = folder / "0-broken.pth"  # sorted first: it serves GFPGAN while it is there
    torch.save({"params_ema": torch.nn.Conv2d(3, 3, 3).state_dict()}, bad)
    try:
        before = len(_jobs(studio, "extras"))
        page = open_studio(browser, studio.url)
        _extras_with_gfpgan(page, source, 1)
        page.click("#extras_generate")
        status = wait_status(page, "extras", ("0-broken.pth",), timeout=30)
        assert "not a GFPGAN" in status
        assert len(_jobs(studio, "extras")) == before  # refused at submit: no job
    finally:
        bad.unlink()
