"""The saving and live-preview settings act on real jobs (issue 21 item 1): set through the A1111 options
API on a real 127.0.0.1 server, then read back from the files a txt2img job writes."""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.outputs.saving import read_infotext

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
DEFAULTS = {
    "samples_save": True, "samples_format": "png", "grid_save": True, "grid_format": "png",
    "jpeg_quality": 80, "enable_pnginfo": True, "save_images_add_number": True, "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images", "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids", "live_previews_enable": True,
    "show_progress_every_n_steps": 10,
}  # fmt: skip


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("outsettings")
    with running_server(
        tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp), preview_every=None
    ) as r:
        yield r


@pytest.fixture()
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client
        assert client.post("/sdapi/v1/options", json=DEFAULTS).status_code == 200


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _generate(c: httpx.Client, **extra: Any) -> dict[str, Any]:
    model = {"sd_model_checkpoint": "tiny-sd1"}
    payload = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 7,
               "save_images": True, "override_settings": model, **extra}  # fmt: skip
    r = c.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _quality_tables(quality: int) -> Any:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, "JPEG", quality=quality)
    return Image.open(buf).quantization


def test_format_quality_folder_numbering_and_pnginfo(srv: Running, c: httpx.Client) -> None:
    options = {"samples_format": "jpg", "jpeg_quality": 50, "outdir_txt2img_samples": "outputs/mine",
               "grid_save": False, "enable_pnginfo": False, "save_images_add_number": False}  # fmt: skip
    assert c.post("/sdapi/v1/options", json=options).status_code == 200
    out = srv.config.outputs_dir
    before = _files(out)
    info = _generate(c, batch_size=2)
    new = _files(out) - before
    day = datetime.date.today().isoformat()
    assert new == {out / "mine" / day / "7.jpg", out / "mine" / day / "8.jpg"}  # no grid, no number
    with Image.open(out / "mine" / day / "7.jpg") as im:
        assert im.format == "JPEG" and im.quantization == _quality_tables(50)
        assert im.quantization != _quality_tables(80)
    assert read_infotext(out / "mine" / day / "7.jpg") is None  # not embedded...
    assert "a lighthouse" in info["info"]  # ...yet the API still reports it
    again = _generate(c)
    assert (
        "a lighthouse" in again["info"] and (out / "mine" / day / "7-1.jpg").exists()
    )  # nothing overwritten


def test_shared_folders_grids_and_embedded_parameters(srv: Running, c: httpx.Client) -> None:
    options = {
        "outdir_samples": "outputs/everything",
        "outdir_grids": "outputs/all-grids",
        "grid_format": "webp",
    }
    assert c.post("/sdapi/v1/options", json=options).status_code == 200
    out = srv.config.outputs_dir
    before = _files(out)
    _generate(c, batch_size=2, seed=11)
    new = sorted(_files(out) - before)
    day = datetime.date.today().isoformat()
    images = [p for p in new if p.parent == out / "everything" / day]
    grids = [p for p in new if p.parent == out / "all-grids" / day]
    assert [p.name.split("-", 1)[1] for p in images] == ["11.png", "12.png"] and len(new) == 3
    assert len(grids) == 1 and grids[0].suffix == ".webp"
    assert "a lighthouse" in (read_infotext(images[0]) or "")


def test_samples_save_off_writes_only_the_grid_but_answers(srv: Running, c: httpx.Client) -> None:
    assert c.post("/sdapi/v1/options", json={"samples_save": False}).status_code == 200
    out = srv.config.outputs_dir
    before = _files(out)
    info = _generate(c, batch_size=2)
    new = _files(out) - before  # grids follow grid_save alone, as in A1111
    assert [p.parent.parent for p in new] == [out / "txt2img-grids"]
    assert len(info["images"]) == 3  # the grid, then both images (A1111's return_grid)


def test_an_output_folder_outside_outputs_is_refused(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/options", json={"outdir_txt2img_samples": "models/Stable-diffusion"})
    assert r.status_code == 422 and "outdir_txt2img_samples" in r.text and "outputs/" in r.text


def _job_preview(c: httpx.Client, steps: int) -> int:
    body = {"kind": "txt2img", "request": {"prompt": "a kite", "steps": steps, "width": 64, "height": 64,
                                           "checkpoint": "tiny-sd1"}}  # fmt: skip
    job = c.post("/api/v1/jobs", json=body).json()
    deadline = time.monotonic() + 120
    while c.get(f"/api/v1/jobs/{job['id']}").json()["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return c.get(f"/api/v1/jobs/{job['id']}/preview").status_code


def test_live_preview_settings_decide_whether_previews_are_made(c: httpx.Client) -> None:
    options = {"live_previews_enable": True, "show_progress_every_n_steps": 1}
    assert c.post("/sdapi/v1/options", json=options).status_code == 200
    assert _job_preview(c, 2) == 200
    assert c.post("/sdapi/v1/options", json={"live_previews_enable": False}).status_code == 200
    assert _job_preview(c, 2) == 204  # no preview was made
    options = {"live_previews_enable": True, "show_progress_every_n_steps": 0}  # A1111: no previews
    assert c.post("/sdapi/v1/options", json=options).status_code == 200
    assert _job_preview(c, 2) == 204
