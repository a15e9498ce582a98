"""IP-Adapter over real HTTP, as sd-webui-controlnet's clients send it: a unit with module
`ip-adapter_clip_sd15` and an IP-Adapter model in `alwayson_scripts.controlnet.args` on /sdapi/v1/txt2img,
its infotext, the model and module lists, and a clear 422 for a missing CLIP vision encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures_ipadapter import write_ip_adapters
from tests.test_ext_controlnet import b64
from tests.test_ext_controlnet_http import FAST, infotext, picture
from tests.test_ext_ipadapter import reference
from tests.test_server_harness import make_manager, running_server


@pytest.fixture(scope="module")
def data(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ipa-http-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    (ckpts / tiny_files["sd1"].name).symlink_to(tiny_files["sd1"])
    write_ip_adapters(data / "models")
    return data


@pytest.fixture(scope="module")
def c(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("ipa-http")
    with (
        running_server(data, tmp, flags=["--api"], manager=make_manager(data, tmp)) as srv,
        srv.client() as client,
    ):
        yield client


@pytest.fixture(scope="module")
def titles(c: httpx.Client) -> dict[str, str]:
    names = c.get("/controlnet/model_list").json()["model_list"]
    models = c.get("/sdapi/v1/sd-models").json()
    return {
        "base": next(n for n in names if n.startswith("ip-adapter_sd15_tiny [")),
        "plus": next(n for n in names if n.startswith("ip-adapter-plus_sd15_tiny [")),
        "checkpoint": next(m["title"] for m in models if m["model_name"] == "tiny-sd1"),
    }


def txt2img(
    c: httpx.Client, titles: dict[str, str], units: list[dict[str, Any]] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {**FAST, "override_settings": {"sd_model_checkpoint": titles["checkpoint"]}}
    if units is not None:
        body["alwayson_scripts"] = {"controlnet": {"args": units}}
    return c.post("/sdapi/v1/txt2img", json=body)


def ip_unit(model: str, **kw: Any) -> dict[str, Any]:
    """As sd-webui-controlnet's API clients send an IP-Adapter unit."""
    return {
        "enabled": True, "image": b64(reference("a")), "module": "ip-adapter_clip_sd15", "model": model,
        "weight": 1.0, "resize_mode": "Crop and Resize", "low_vram": False, "processor_res": 512,
        "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False, **kw,
    }  # fmt: skip


def test_lists_name_the_adapters_and_modules(c: httpx.Client, titles: dict[str, str]) -> None:
    modules = c.get("/controlnet/module_list").json()
    for name in ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith"):
        assert name in modules["module_list"] and modules["module_detail"][name]["model_free"] is False
    r = c.post(
        "/controlnet/detect",
        json={"controlnet_module": "ip-adapter_clip_sd15", "controlnet_input_images": [b64(reference("a"))]},
    )
    assert r.status_code == 422 and "no map to preview" in r.text, r.text


def test_an_ip_adapter_unit_over_the_controlnet_api(c: httpx.Client, titles: dict[str, str]) -> None:
    plain = picture(txt2img(c, titles))
    r = txt2img(c, titles, [ip_unit(titles["base"])])
    steered = picture(r)
    assert np.abs(steered.astype(int) - plain).max() > 8
    line = infotext(r)["ControlNet 0"]
    assert line.startswith(f"Module: ip-adapter_clip_sd15, Model: {titles['base']}, Weight: 1"), line
    assert np.array_equal(picture(txt2img(c, titles)), plain)  # no leak into the next job
    assert np.array_equal(picture(txt2img(c, titles, [ip_unit(titles["base"], weight=0)])), plain)
    plus = picture(txt2img(c, titles, [ip_unit(titles["plus"])]))
    assert not np.array_equal(plus, steered) and not np.array_equal(plus, plain)


def test_a_missing_clip_vision_encoder_is_a_clear_422(c: httpx.Client, titles: dict[str, str]) -> None:
    r = txt2img(c, titles, [ip_unit(titles["base"]), ip_unit(titles["base"], module="ip-adapter_clip_sdxl")])
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "alwayson_scripts.controlnet.args[1].module", r.text
    assert "models/clip_vision" in r.text and "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors" in r.text
    picture(txt2img(c, titles))  # the server carries on
