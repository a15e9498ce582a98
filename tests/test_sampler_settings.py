"""The sampler settings act on real jobs (issue 21 item 1): sigma churn/tmin/tmax/noise, ENSD, eta for
DDIM and img2img's noise multiplier are the defaults of requests that leave them out, through the A1111
API (options, or override_settings per request) and the studio's tabs (runner.build_request)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.settings import SPECS
from webui.ui.runner import build_request

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
KEYS = (
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "eta_noise_seed_delta",
    "eta_ddim",
    "initial_noise_multiplier",
)
DEFAULTS = {k: SPECS[k].default for k in KEYS}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("samplersettings")
    with running_server(tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp)) as r:
        yield r


@pytest.fixture()
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client
        assert client.post("/sdapi/v1/options", json=DEFAULTS).status_code == 200


def _run(c: httpx.Client, route: str = "txt2img", **extra: Any) -> tuple[np.ndarray, dict[str, Any]]:
    payload = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 7,
               "save_images": False, **extra}  # fmt: skip
    payload.setdefault("override_settings", {})["sd_model_checkpoint"] = "tiny-sd1"
    r = c.post(f"/sdapi/v1/{route}", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB")
    return np.asarray(image, dtype=np.int16), json.loads(body["info"])


def _options(c: httpx.Client, **values: Any) -> None:
    assert c.post("/sdapi/v1/options", json=values).status_code == 200


def test_sigma_churn_setting_is_the_default_and_the_payload_wins(c: httpx.Client) -> None:
    plain, _ = _run(c, sampler_name="Euler")
    _options(c, s_churn=1.0)
    churned, _ = _run(c, sampler_name="Euler")
    assert np.abs(churned - plain).max() > 0
    explicit, _ = _run(c, sampler_name="Euler", s_churn=0.0)  # the request's own value wins
    assert np.array_equal(explicit, plain)


def test_ensd_setting_moves_ancestral_noise_and_is_in_the_infotext(c: httpx.Client) -> None:
    plain, info = _run(c, sampler_name="Euler a")
    assert "ENSD" not in info["infotexts"][0]
    _options(c, eta_noise_seed_delta=31337)
    delta, info = _run(c, sampler_name="Euler a")
    assert np.abs(delta - plain).max() > 0 and "ENSD: 31337" in info["infotexts"][0]
    _options(c, eta_noise_seed_delta=0)
    per_request, info = _run(c, sampler_name="Euler a", override_settings={"eta_noise_seed_delta": 31337})
    assert np.array_equal(per_request, delta) and "ENSD: 31337" in info["infotexts"][0]


def test_eta_ddim_setting_acts_on_ddim_only(c: httpx.Client) -> None:
    ddim, _ = _run(c, sampler_name="DDIM")
    euler, _ = _run(c, sampler_name="Euler")
    _options(c, eta_ddim=1.0)
    assert np.abs(_run(c, sampler_name="DDIM")[0] - ddim).max() > 0
    assert np.array_equal(_run(c, sampler_name="Euler")[0], euler)
    assert np.array_equal(_run(c, sampler_name="DDIM", eta=0.0)[0], ddim)


def test_noise_multiplier_setting_acts_on_img2img(c: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 40, 40)).save(buf, format="PNG")
    init = {"init_images": [base64.b64encode(buf.getvalue()).decode()], "denoising_strength": 0.6}
    plain, _ = _run(c, "img2img", **init)
    _options(c, initial_noise_multiplier=0.5)
    quieter, info = _run(c, "img2img", **init)
    assert np.abs(quieter - plain).max() > 0 and "Noise multiplier: 0.5" in info["infotexts"][0]


def test_studio_requests_take_the_settings_for_fields_without_a_control() -> None:
    stored = {"s_churn": 0.5, "s_tmax": 0.0, "eta_noise_seed_delta": 31337, "eta_ddim": 0.3}
    values = {"prompt": "x", "sampler_name": "DDIM", "steps": 3, "width": 64, "height": 64}
    request = build_request("txt2img", values, settings=stored.get)
    assert (request.s_churn, request.s_tmax, request.eta_noise_seed_delta, request.eta) == (
        0.5, float("inf"), 31337, 0.3
    )  # fmt: skip
    euler = build_request("txt2img", {**values, "sampler_name": "Euler"}, settings=stored.get)
    assert euler.eta is None


def test_removed_settings_are_not_offered(c: httpx.Client) -> None:
    for key in ("eta_ancestral", "comma_padding_backtrack", "img2img_fix_steps"):
        assert key not in SPECS
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                               "override_settings": {key: 7}})  # fmt: skip
        assert r.status_code == 422 and key in r.text
