"""A picture too large even with the tiled VAE is refused when submitted (422 naming the field, with the
memory it would need and the largest size that fits), against the `image_memory_limit_mb` setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import running_server
from webui.core.image_memory import MiB, check_image_memory, limit_bytes, picture_bytes
from webui.core.types import RequestError, Txt2ImgRequest


def test_limit_is_the_setting_or_half_the_ram() -> None:
    assert limit_bytes(300) == 300 * MiB
    assert limit_bytes(0, ram=8 * 1024 * MiB) == 4 * 1024 * MiB
    assert limit_bytes(None, ram=2 * 1024 * MiB) == 1024 * MiB
    assert picture_bytes(1024, 1024) == 32 * MiB


def test_too_large_a_picture_names_the_field_the_need_and_what_fits() -> None:
    check_image_memory(Txt2ImgRequest(width=2048, height=2048), 128 * MiB)  # exactly the limit: fine
    with pytest.raises(RequestError) as e:
        check_image_memory(Txt2ImgRequest(width=4096, height=4096), 256 * MiB)
    assert e.value.field == "width"
    assert "512 MiB" in e.value.message and "256 MiB" in e.value.message and "2896x2896" in e.value.message
    with pytest.raises(RequestError) as e:
        check_image_memory(Txt2ImgRequest(width=1024, height=1024, batch_size=8), 100 * MiB)
    assert e.value.field == "batch_size" and "256 MiB" in e.value.message and "at most 3" in e.value.message
    hires = Txt2ImgRequest(width=1024, height=1024, enable_hr=True, hr_scale=2.0, denoising_strength=0.5)
    check_image_memory(dataclass_replace(hires, enable_hr=False), 100 * MiB)  # the first pass alone fits
    with pytest.raises(RequestError) as e:
        check_image_memory(hires, 100 * MiB)
    assert e.value.field == "hr_scale" and "2048x2048" in e.value.message


def dataclass_replace(request: Txt2ImgRequest, **changes: object) -> Txt2ImgRequest:
    import dataclasses

    return dataclasses.replace(request, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def c(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_server(tiny_data_dir, tmp_path_factory.mktemp("image-memory")) as running,
        running.client() as client,
    ):
        yield client


def test_the_setting_refuses_a_large_request_over_the_api(c: httpx.Client) -> None:
    assert c.post("/sdapi/v1/options", json={"image_memory_limit_mb": -1}).status_code == 422
    r = c.post("/sdapi/v1/options", json={"image_memory_limit_mb": 16})
    assert r.status_code == 200, r.text
    assert c.get("/sdapi/v1/options").json()["image_memory_limit_mb"] == 16
    body = {"prompt": "a red cube", "steps": 2, "seed": 7}
    big = c.post("/sdapi/v1/txt2img", json={**body, "width": 1024, "height": 1024})
    assert big.status_code == 422, big.text
    assert "width" in big.text and "32 MiB" in big.text and "720x720" in big.text, big.text
    small = c.post("/sdapi/v1/txt2img", json={**body, "width": 64, "height": 64})
    assert small.status_code == 200, small.text
