"""/sdapi/v1 for the model families over HTTP (the real server, tiny models): sd-models says each
checkpoint's family, sd-modules lists the text encoders and VAEs, Forge's `distilled_cfg_scale` reaches
the job, and Forge's `forge_additional_modules` picks the files a model is assembled from."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import FLUX_DEMO
from tests.test_server_harness import Running, make_manager, running_server
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext

FLUX: dict[str, Any] = {
    "prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler",
    "cfg_scale": 1, "override_settings": {"sd_model_checkpoint": FLUX_DEMO},
}  # fmt: skip


@pytest.fixture(scope="module")
def c(tiny_flux_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("sdapi-families")
    manager = make_manager(tiny_flux_data_dir, tmp)
    running: Running
    with running_server(tiny_flux_data_dir, tmp, manager=manager) as running, running.client() as client:
        yield client


def _infotext(body: dict[str, Any]) -> dict[str, str]:
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    return parse_infotext(read_infotext(image) or "")


def test_sd_models_say_each_checkpoints_family(c: httpx.Client) -> None:
    models = c.get("/sdapi/v1/sd-models").json()
    by_file = {Path(m["filename"]).name: m for m in models}
    assert {k: (m["family"], m["arch"]) for k, m in by_file.items()} == {
        "tiny-sd1.safetensors": ("SD1", "sd1"),
        FLUX_DEMO: ("Flux dev", "flux-dev"),
        "tiny-flux-schnell-split.safetensors": ("Flux schnell", "flux-schnell"),
    }
    for m in models:  # A1111's fields are all still there
        assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(m)


def test_sd_modules_list_the_text_encoders_and_vaes(c: httpx.Client, tiny_flux_data_dir: Path) -> None:
    modules = c.get("/sdapi/v1/sd-modules").json()
    models = tiny_flux_data_dir / "models"
    assert sorted(modules, key=lambda m: m["model_name"]) == [
        {"model_name": "ae.safetensors", "filename": str(models / "VAE" / "ae.safetensors")},
        {"model_name": "clip_l.safetensors", "filename": str(models / "text_encoder" / "clip_l.safetensors")},
        {
            "model_name": "t5xxl_fp16.safetensors",
            "filename": str(models / "text_encoder" / "t5xxl_fp16.safetensors"),
        },
    ]


def test_distilled_cfg_scale_reaches_flux_dev_and_its_infotext(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FLUX, "distilled_cfg_scale": 5.5})
    assert r.status_code == 200, r.text
    params = _infotext(r.json())
    assert params["Distilled CFG Scale"] == "5.5" and params["Model"] == Path(FLUX_DEMO).stem
    r = c.post("/sdapi/v1/txt2img", json=FLUX)  # absent: the family's default
    assert _infotext(r.json())["Distilled CFG Scale"] == "3.5"


def test_distilled_cfg_scale_is_ignored_by_models_without_a_guidance_input(c: httpx.Client) -> None:
    payload = {**FLUX, "override_settings": {"sd_model_checkpoint": "tiny-sd1"}, "cfg_scale": 7}
    plain = c.post("/sdapi/v1/txt2img", json=payload)
    other = c.post("/sdapi/v1/txt2img", json={**payload, "distilled_cfg_scale": 9.0})
    assert plain.status_code == other.status_code == 200, other.text
    assert "Distilled CFG Scale" not in _infotext(other.json())
    assert plain.json()["images"] == other.json()["images"]


def test_distilled_cfg_scale_is_validated(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FLUX, "distilled_cfg_scale": -1})
    assert r.status_code == 422 and r.json()["field"] == "distilled_cfg_scale"


@pytest.mark.parametrize("by", ["file name", "full path"])
def test_forge_additional_modules_assemble_the_model(
    c: httpx.Client, tiny_flux_data_dir: Path, by: str
) -> None:
    """The demo Flux file has its own VAE; a module picks the split model's ae instead."""
    ae = tiny_flux_data_dir / "models" / "VAE" / "ae.safetensors"
    own = c.post("/sdapi/v1/txt2img", json=FLUX)
    picked = c.post(
        "/sdapi/v1/txt2img",
        json={**FLUX, "forge_additional_modules": [ae.name if by == "file name" else str(ae)]},
    )
    assert own.status_code == picked.status_code == 200, picked.text
    assert "Module 1" not in _infotext(own.json())
    assert _infotext(picked.json())["Module 1"] == "ae"
    assert own.json()["images"] != picked.json()["images"]


@pytest.mark.parametrize(
    ("route", "payload", "field", "words"),
    [
        (
            "txt2img",
            {"forge_additional_modules": ["nope.safetensors"]},
            "forge_additional_modules",
            "ae.safetensors",
        ),
        ("img2img", {"forge_additional_modules": ["nope.safetensors"]}, "forge_additional_modules", "clip_l"),
        (
            "txt2img",
            {
                "forge_additional_modules": ["ae.safetensors"],
                "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
            },
            "forge_additional_modules",
            "only SD3 and Flux",
        ),
        ("txt2img", {"hr_additional_modules": ["ae.safetensors"]}, "hr_additional_modules", "first pass"),
        ("txt2img", {"forge_additional_modules": "ae.safetensors"}, "forge_additional_modules", "list"),
    ],
)
def test_bad_module_lists_are_422_naming_the_field(
    c: httpx.Client, route: str, payload: dict[str, Any], field: str, words: str
) -> None:
    body = {**FLUX, **payload}
    if route == "img2img":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
        body["init_images"] = [base64.b64encode(buf.getvalue()).decode()]
    r = c.post(f"/sdapi/v1/{route}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["error"]


def test_empty_module_lists_are_what_forge_clients_send_by_default(c: httpx.Client) -> None:
    payload = {**FLUX, "forge_additional_modules": [], "hr_additional_modules": ["Use same choices"]}
    r = c.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text


def test_a_diffusers_folders_family_is_read_from_its_configs(tmp_path: Path) -> None:
    from webui.core.models.family_probe import family_of_path
    from webui.core.models.tiny_flow import build_tiny_flow, save_diffusers

    for arch in ("flux-dev", "flux-schnell"):
        folder = save_diffusers(build_tiny_flow(arch, seed=1), tmp_path / arch)
        found = family_of_path(folder)
        assert found is not None and found.arch == arch
    (tmp_path / "broken").mkdir()
    assert family_of_path(tmp_path / "broken") is None  # no model_index.json: cannot tell, no error


def test_a_model_that_takes_no_modules_says_so(tiny_flux_data_dir: Path, tmp_path: Path) -> None:
    from webui.core.models.checkpoint_file import CheckpointError
    from webui.core.models.manager import ModelNotFound

    manager = make_manager(tiny_flux_data_dir, tmp_path)
    with pytest.raises(CheckpointError, match="takes no modules"), manager.acquire("tiny-sd1", None, ["ae"]):
        pass
    with pytest.raises(ModelNotFound, match="t5xxl_fp16.safetensors"), manager.acquire(None, None, ["x"]):
        pass


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"width": 72}, "width"),  # Flux packs 2x2 latent cells: sizes are multiples of 16
        ({"sampler_name": "DDIM"}, "sampler_name"),  # a diffusion sampler for a flow model
    ],
)
def test_a_value_only_the_model_can_judge_is_a_422_naming_the_field(
    c: httpx.Client, change: dict[str, Any], field: str
) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FLUX, **change})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field and body["detail"][0]["loc"] == ["body", field]
    assert c.post("/sdapi/v1/txt2img", json=FLUX).status_code == 200  # the server carries on


NATIVE = {
    "prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler",
    "cfg_scale": 1.0, "checkpoint": FLUX_DEMO,
}  # fmt: skip


def test_native_jobs_check_modules_before_queueing(c: httpx.Client) -> None:
    for modules, words in ((["nope.safetensors"], "nope"), (["ae.safetensors"], None)):
        request = {**NATIVE, "modules": modules}
        if words is None:  # listed files, but a model that is not assembled from modules
            request["checkpoint"] = "tiny-sd1"
        r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": request})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "modules" and (words or "only SD3 and Flux") in r.json()["error"]


def test_a_native_job_failed_on_a_bad_value_names_the_field(c: httpx.Client) -> None:
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": {**NATIVE, "width": 72}})
    assert r.status_code == 201, r.text  # only the model knows Flux wants multiples of 16
    job_id = r.json()["id"]
    for _ in range(600):
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert job["state"] == "failed" and job["error_field"] == "width" and "16" in job["error"]
