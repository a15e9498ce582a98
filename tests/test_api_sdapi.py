"""/sdapi/v1 over HTTP against the real server with tiny models: A1111's shapes, mapping, validation."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.jobs import REQUEST_KINDS
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext

FAST: dict[str, Any] = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("sdapi")
    with running_server(tiny_data_dir, tmp, manager=make_manager(tiny_data_dir, tmp)) as running:
        yield running


@pytest.fixture
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def _image(b64: str) -> Image.Image:
    assert not b64.startswith("data:")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _sha10(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def _model_title(c: httpx.Client, file_name: str) -> str:
    models = c.get("/sdapi/v1/sd-models").json()
    return str(next(m["title"] for m in models if Path(m["filename"]).name == file_name))


# -- txt2img -------------------------------------------------------------------------------------------------


def test_txt2img_shape_info_and_embedded_infotext(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "batch_size": 2, "sampler_name": "Euler a"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert isinstance(body["info"], str)
    info = json.loads(body["info"])
    for key in (
        "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
        "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps",
        "batch_size", "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash",
        "sd_vae_name", "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
        "extra_generation_params", "index_of_first_image", "infotexts", "styles", "job_timestamp",
        "clip_skip", "is_using_inpainting_conditioning", "version",
    ):  # fmt: skip
        assert key in info, key
    assert info["all_seeds"] == [7, 8] and info["seed"] == 7 and info["sampler_name"] == "Euler a"
    pictures = [_image(b) for b in body["images"]][info["index_of_first_image"] :]
    assert len(pictures) == 2 and all(p.size == (64, 64) for p in pictures)
    assert [read_infotext(p) for p in pictures] == info["infotexts"]
    assert parse_infotext(info["infotexts"][1])["Seed"] == "8"
    assert body["parameters"]["prompt"] == "a red cube" and body["parameters"]["steps"] == 2


def test_txt2img_defaults_to_not_saving_in_outputs_but_saves_on_request(
    c: httpx.Client, srv: Running
) -> None:
    outputs = srv.config.outputs_dir / "txt2img-images"
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    assert c.post("/sdapi/v1/txt2img", json=FAST).status_code == 200
    assert (set(outputs.rglob("*.png")) if outputs.exists() else set()) == before
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "save_images": True, "send_images": False})
    assert r.status_code == 200 and r.json()["images"] == []
    assert len(set(outputs.rglob("*.png")) - before) == 1


def test_override_checkpoint_per_request_and_model_hash(c: httpx.Client, tiny_files: dict[str, Path]) -> None:
    for arch in ("sd1", "sd1-inpaint"):
        title = _model_title(c, tiny_files[arch].name)
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"sd_model_checkpoint": title}})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["sd_model_hash"] == _sha10(tiny_files[arch])
        assert parse_infotext(info["infotexts"][0])["Model hash"] == _sha10(tiny_files[arch])
    assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] in (None, "")  # this request only


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"width": 100000}, "width"),
        ({"height": 0}, "height"),
        ({"steps": -1}, "steps"),
        ({"batch_size": 10_000}, "batch_size"),
        ({"n_iter": 10**6}, "n_iter"),
        ({"seed": 2**64}, "seed"),
        ({"cfg_scale": "lots"}, "cfg_scale"),
        ({"width": "wide"}, "width"),
        ({"restore_faces": True}, "restore_faces"),
        ({"tiling": True}, "tiling"),
        ({"alwayson_scripts": {"Regional Prompter": {"args": []}}}, "alwayson_scripts"),
        ({"script_name": "x/y/z plot"}, "script_args.x_values"),  # a plot over nothing
        ({"script_name": "ControlNet"}, "script_name"),
        ({"outpath_samples": "../../etc"}, "outpath_samples"),
        (
            {"override_settings": {"outdir_txt2img_samples": "/tmp/x"}},
            "override_settings.outdir_txt2img_samples",
        ),
        ({"override_settings": {"randn_source": "GPU"}}, "override_settings.randn_source"),
        ({"override_settings": {"eta_noise_seed_delta": "lots"}}, "eta_noise_seed_delta"),
        (
            {"override_settings": {"sd_model_checkpoint": "nope.safetensors"}},
            "override_settings.sd_model_checkpoint",
        ),
        ({"override_settings": {"sd_vae": "nope.pt"}}, "override_settings.sd_vae"),
        ({"scheduler": "Wobbly"}, "scheduler"),
    ],
)
def test_bad_fields_are_422_naming_the_field(c: httpx.Client, payload: dict[str, Any], field: str) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, **payload})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field and field in body["error"]
    assert isinstance(body["detail"], list) and body["detail"]


def test_unknown_sampler_lists_valid_names(c: httpx.Client) -> None:
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "sampler_name": "Euler z"})
    assert r.status_code == 422 and r.json()["field"] == "sampler_name"
    assert "DPM++ 2M" in r.json()["error"] and "Euler a" in r.json()["error"]
    r = c.post("/sdapi/v1/txt2img", json={**FAST, "sampler_index": "Nope"})  # the legacy alias is used
    assert r.status_code == 422 and r.json()["field"] == "sampler_name"


def test_defaults_clients_send_are_accepted(c: httpx.Client) -> None:
    payload = {
        **FAST, "restore_faces": False, "tiling": False, "script_args": [], "alwayson_scripts": {},
        "enable_hr": False, "refiner_checkpoint": None, "override_settings_restore_afterwards": True,
        "do_not_save_grid": True, "sampler_index": "Euler", "s_min_uncond": 0, "comments": {},
        "override_settings": {"CLIP_stop_at_last_layers": 2, "samples_format": "png"}, "unknown_new": 1,
    }  # fmt: skip
    r = c.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    assert info["sampler_name"] == "Euler"


def test_img2img_accepts_a_data_url_and_refuses_urls(c: httpx.Client) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(png, format="PNG")
    data = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    r = c.post("/sdapi/v1/img2img", json={**FAST, "init_images": [data], "denoising_strength": 0.5})
    assert "img2img" in REQUEST_KINDS
    assert r.status_code == 200, r.text
    assert _image(r.json()["images"][0]).size == (64, 64)
    r = c.post("/sdapi/v1/img2img", json={**FAST, "init_images": ["https://169.254.169.254/a.png"]})
    assert r.status_code == 422 and r.json()["field"] == "init_images.0"


# -- other routes --------------------------------------------------------------------------------------------


def test_progress_idle_shape(c: httpx.Client) -> None:
    body = c.get("/sdapi/v1/progress", params={"skip_current_image": "false"}).json()
    assert body["progress"] == 0 and body["state"]["job_count"] == 0 and body["current_image"] is None
    assert set(body) == {"progress", "eta_relative", "state", "current_image", "textinfo", "current_task"}
    assert set(body["state"]) >= {
        "skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no",
        "sampling_step", "sampling_steps",
    }  # fmt: skip


def test_interrupt_and_skip_answer_like_a1111_when_idle(c: httpx.Client) -> None:
    assert c.post("/sdapi/v1/interrupt").json() == {}
    r = c.post("/sdapi/v1/skip")
    assert r.status_code == 200 and r.json() is None


def test_listing_routes_shapes(c: httpx.Client, tiny_files: dict[str, Path]) -> None:
    models = c.get("/sdapi/v1/sd-models").json()
    assert {Path(m["filename"]).name for m in models} >= {p.name for p in tiny_files.values()}
    for m in models:
        # A1111's fields, plus the family (Forge-like extras: webui.api.model_lists)
        assert set(m) == {"title", "model_name", "hash", "sha256", "filename", "config", "family", "arch"}
    by_file = {Path(m["filename"]).name: m for m in models}
    assert by_file["tiny-sdxl.safetensors"]["family"] == "SDXL"
    assert by_file["tiny-sd1.safetensors"]["arch"] == "sd1"
    samplers = c.get("/sdapi/v1/samplers").json()
    assert any(s["name"] == "DPM++ 2M" for s in samplers) and set(samplers[0]) == {
        "name",
        "aliases",
        "options",
    }
    by_name = {s["name"]: s for s in samplers}
    for name, alias in (
        ("DPM++ 3M SDE", "k_dpmpp_3m_sde"),
        ("Restart", "restart"),
        ("DDIM CFG++", "ddim_cfgpp"),
    ):
        assert by_name[name]["aliases"] == [alias]
    schedulers = c.get("/sdapi/v1/schedulers").json()
    assert {"name", "label", "aliases", "default_rho", "need_inner_model"} == set(schedulers[0])
    assert {"align_your_steps", "kl_optimal", "polyexponential", "simple", "normal"} <= {
        s["name"] for s in schedulers
    }
    ups = c.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in ups] == ["None", "Lanczos", "Nearest"]
    assert set(ups[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert {"name": "Latent"} in c.get("/sdapi/v1/latent-upscale-modes").json()
    assert c.get("/sdapi/v1/sd-vae").json() == []
    assert c.get("/sdapi/v1/loras").json() == []
    # the shipped extensions: X/Y/Z plot is a selectable script, ControlNet, the detailer (by ADetailer's
    # name) and wildcards have always-on accordions
    selectable = ["prompt matrix", "prompts from file or textbox"]
    on = ["controlnet", "adetailer", "wildcards"]
    assert c.get("/sdapi/v1/scripts").json() == {
        "txt2img": [*selectable, "sd upscale", "x/y/z plot", *on],
        "img2img": [
            *selectable,
            "outpainting mk2",
            "poor man's outpainting",
            "sd upscale",
            "x/y/z plot",
            *on,
            "soft inpainting",  # A1111's built-in always-on script: a core feature here
        ],
    }
    info = {(i["name"], i["is_img2img"]): i for i in c.get("/sdapi/v1/script-info").json()}
    assert info["soft inpainting", True]["args"][1]["label"] == "Schedule bias"
    assert info["wildcards", False]["is_alwayson"] and not info["x/y/z plot", False]["is_alwayson"]
    assert info["controlnet", True]["is_alwayson"]
    assert info["adetailer", True]["args"][1]["label"] == "ADetailer model"
    assert [a["label"] for a in info["x/y/z plot", False]["args"]][:2] == ["X type", "X values"]
    exts = {e["name"]: e for e in c.get("/sdapi/v1/extensions").json()}
    assert set(exts) >= {"wildcards", "xyz_plot", "upscalers", "a1111_scripts"}
    assert all(e["status"] == "loaded" and e["enabled"] for e in exts.values())
    emb = c.get("/sdapi/v1/embeddings").json()
    assert set(emb) == {"loaded", "skipped"}
    assert isinstance(c.get("/sdapi/v1/prompt-styles").json(), list)
    mem = c.get("/sdapi/v1/memory").json()
    assert mem["ram"]["total"] > 0 and mem["ram"]["free"] + mem["ram"]["used"] == mem["ram"]["total"]
    assert "cuda" in mem
    flags = c.get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True and "api_auth" in flags
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras"):
        r = c.post(f"/sdapi/v1/{route}")
        assert r.status_code == 200 and isinstance(r.json(), dict), route


def test_prompt_styles_read_styles_csv(c: httpx.Client, srv: Running) -> None:
    path = getattr(srv.config, "styles_path", srv.config.data_dir / "styles.csv")
    if path.exists():
        pytest.skip("a styles.csv is already in the shared data folder")
    try:
        path.write_text('name,prompt,negative_prompt\ncine,"{prompt}, film grain",blurry\n', encoding="utf-8")
        styles = c.get("/sdapi/v1/prompt-styles").json()
    finally:
        path.unlink()
    try:
        import webui.core.prompts.styles  # noqa: F401
    except ImportError:
        assert styles == []
        return
    assert styles == [{"name": "cine", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"}]


def test_options_roundtrip_validated_and_persisted(
    c: httpx.Client, srv: Running, tiny_files: dict[str, Path]
) -> None:
    options = c.get("/sdapi/v1/options").json()
    assert "sd_model_checkpoint" in options and "CLIP_stop_at_last_layers" in options
    r = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing-model.safetensors"})
    assert r.status_code == 422 and r.json()["field"] == "sd_model_checkpoint"
    assert "tiny-sd1.safetensors" in r.json()["error"]  # lists the valid names
    r = c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 99})
    assert r.status_code == 422 and r.json()["field"] == "CLIP_stop_at_last_layers"
    title = _model_title(c, tiny_files["sd1-inpaint"].name)
    try:
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": title}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == title
        saved = json.loads(srv.config.settings_path.read_text(encoding="utf-8"))
        assert saved["sd_model_checkpoint"] == title
        info = json.loads(c.post("/sdapi/v1/txt2img", json=FAST).json()["info"])
        assert info["sd_model_hash"] == _sha10(tiny_files["sd1-inpaint"])  # the stored choice is the default
    finally:
        c.post("/sdapi/v1/options", json={"sd_model_checkpoint": None})


def test_png_info_reads_a_data_url_image(c: httpx.Client) -> None:
    made = c.post("/sdapi/v1/txt2img", json={**FAST, "negative_prompt": "ugly"}).json()
    r = c.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + made["images"][0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"] == json.loads(made["info"])["infotexts"][0]
    assert body["parameters"]["Prompt"] == "a red cube" and body["parameters"]["Negative prompt"] == "ugly"
    assert body["parameters"]["Seed"] == "7" and body["parameters"]["Size-1"] == "64"
    # what the text leaves out comes back with A1111's defaults, as its reader gives them
    assert body["parameters"]["Clip skip"] == "1" and body["parameters"]["Inpaint area"] == "Whole picture"
    assert c.post("/sdapi/v1/png-info", json={"image": ""}).json()["info"] == ""
    for bad in ("http://127.0.0.1/x.png", "%%%%", base64.b64encode(b"<svg/>").decode()):
        r = c.post("/sdapi/v1/png-info", json={"image": bad})
        assert r.status_code == 422 and r.json()["field"] == "image", bad
