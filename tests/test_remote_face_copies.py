"""`save_images_before_face_restoration` for a job on a remote (Ray) worker: the worker sends each copy
made before face restoration to the server as a marked image, and the server writes it before the image
it precedes, as an in-process job does. The worker is the real `RemoteWorker` (the class a Ray actor
wraps) run in this process, with a real engine, the tiny SD1 and the tiny face restorers; the server's
side is the real `RemoteImages`. The transport between them (Ray) is tested in test_ray_workers.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.test_server_harness import server_config
from webui.core.jobs.ray_worker import RemoteWorker
from webui.core.jobs.remote import DoneMsg, ImageMsg, JobSpec, RemoteImages
from webui.core.outputs.options import OutputOptions
from webui.core.outputs.saving import read_infotext
from webui.core.types import Txt2ImgRequest

SAVING = {"save_images_before_face_restoration": True, "samples_save": True}


class ListingReport:
    """A job's Reporter that keeps each listing of its images (test_ray_workers.py uses it too)."""

    def __init__(self) -> None:
        self.listed: list[Any] = []

    def progress(self, info: Any, preview_png: bytes | None) -> None:
        pass

    def images(self, images: Any) -> None:
        self.listed.append(tuple(images))


@pytest.fixture(scope="module")
def worker(tiny_data_dir: Path, tiny_face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A worker whose node holds the tiny SD1 and the tiny GFPGAN and CodeFormer files."""
    data = tmp_path_factory.mktemp("worker-node")
    models = data / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / "tiny-sd1.safetensors").symlink_to(
        tiny_data_dir / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    )
    for folder in ("GFPGAN", "Codeformer"):
        (models / folder).symlink_to(tiny_face_models / folder, target_is_directory=True)
    return RemoteWorker(server_config(data, data), threads=1)


def _request(**kw: Any) -> Txt2ImgRequest:
    fields: dict[str, Any] = dict(
        prompt="a face", seed=7, width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler_name="Euler"
    )
    return Txt2ImgRequest(**{**fields, "restore_faces": True, "save_images": True, **kw})


def _run(worker: Any, request: Txt2ImgRequest, settings: dict[str, Any]) -> list[Any]:
    messages = list(worker.run(JobSpec("job-1", request, 0, settings)))
    done = messages[-1]
    assert isinstance(done, DoneMsg) and done.error is None, done
    return [m for m in messages if isinstance(m, ImageMsg)]


def test_the_worker_sends_a_marked_copy_before_each_image(worker: Any) -> None:
    sent = _run(worker, _request(batch_size=2), SAVING)
    assert [(m.copy, m.seed) for m in sent] == [(True, 7), (False, 7), (True, 8), (False, 8)]
    assert sent[0].infotext == sent[1].infotext and "Face restoration: CodeFormer" in sent[1].infotext


@pytest.mark.parametrize(
    "settings, request_kw",
    [
        ({}, {}),  # the setting's default: off
        ({"save_images_before_face_restoration": True, "samples_save": False}, {}),  # the server saves none
        (SAVING, {"restore_faces": False}),  # nothing is restored: nothing to copy
        (SAVING, {"save_images": False}),  # the request saves nothing
    ],
)
def test_no_copy_is_sent_when_the_server_would_not_write_one(
    worker: Any, settings: dict[str, Any], request_kw: dict[str, Any]
) -> None:
    sent = _run(worker, _request(**request_kw), settings)
    assert [m.copy for m in sent] == [False]


def test_the_server_writes_the_copy_first_and_lists_only_the_image(worker: Any, tmp_path: Path) -> None:
    request = _request()
    report = ListingReport()
    outputs = OutputOptions(tmp_path / "outputs", save_before_face_restoration=True)
    images = RemoteImages(request, tmp_path / "job", outputs, report)
    for msg in _run(worker, request, SAVING):
        images.add(msg)
    written = sorted((tmp_path / "outputs" / "txt2img-images").rglob("*.png"))
    assert [p.name for p in written] == ["00000-7-before-face-restoration.png", "00001-7.png"], written
    (listed,) = report.listed[-1]  # one image listed: the restored one
    assert Path(listed.path) == written[1]
    assert read_infotext(written[0]) == read_infotext(written[1]) == listed.infotext
    with Image.open(written[0]) as copy, Image.open(written[1]) as final:
        assert copy.size == final.size == (64, 64)
        assert np.asarray(copy.convert("RGB")).std() > 0  # a picture, not a blank


def test_a_server_without_the_setting_ignores_a_copy(worker: Any, tmp_path: Path) -> None:
    request = _request()
    report = ListingReport()
    images = RemoteImages(request, tmp_path / "job", OutputOptions(tmp_path / "outputs"), report)
    for msg in _run(worker, request, SAVING):  # a worker that sent one anyway
        images.add(msg)
    written = sorted((tmp_path / "outputs").rglob("*.png"))
    assert [p.name for p in written] == ["00000-7.png"]
