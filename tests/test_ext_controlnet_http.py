"""ControlNet end to end over real HTTP: sd-webui-controlnet's payload on /sdapi/v1/txt2img and img2img,
the accordion's fields on /api/v1/jobs, its routes, and the 422s naming unit and field. The server runs
the shipped extensions/controlnet with the tiny SD1 and SDXL checkpoints and the tiny ControlNets in its
data folder's models/ControlNet."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures_controlnet import extension_modules
from tests.test_api_jobs import _submit, _wait_done
from tests.test_ext_controlnet import b64, drawing
from tests.test_server_harness import Running, make_manager, running_server
from webui.api.sdapi import plugin_host
from webui.core.outputs.infotext import parse_infotext

FAST: dict[str, Any] = {"prompt": "a red house", "steps": 3, "width": 64, "height": 64, "seed": 11}


@pytest.fixture(scope="module")
def data(
    tiny_files: dict[str, Path],
    tiny_controlnet_files: dict,
    tiny_adapter_files: dict,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    data = tmp_path_factory.mktemp("cn-http-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for arch in ("sd1", "sdxl"):
        (ckpts / tiny_files[arch].name).symlink_to(tiny_files[arch])
    (data / "models" / "VAE").mkdir()
    (data / "models" / "ControlNet").mkdir()
    for (_arch, layout), path in tiny_controlnet_files.items():
        if layout == "diffusers":
            (data / "models" / "ControlNet" / path.name).symlink_to(path)  # linked, as users often do
    adapter = tiny_adapter_files["sd1", "diffusers"]
    shutil.copy(adapter, data / "models" / "ControlNet" / adapter.name)
    return data


@pytest.fixture(scope="module")
def srv(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("cn-http")
    with running_server(data, tmp, flags=["--api"], manager=make_manager(data, tmp)) as running:
        yield running


@pytest.fixture(scope="module")
def c(srv: Running) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


@pytest.fixture(scope="module")
def titles(c: httpx.Client) -> dict[str, str]:
    """{"sd1": title, "sdxl": title} as /controlnet/model_list lists them, and the checkpoints'."""
    names = c.get("/controlnet/model_list").json()["model_list"]
    out = {arch: next(n for n in names if n.startswith(f"tiny-cn-{arch}-")) for arch in ("sd1", "sdxl")}
    models = c.get("/sdapi/v1/sd-models").json()
    out["checkpoint"] = next(m["title"] for m in models if m["model_name"] == "tiny-sd1")
    return out


def unit(model: str, **kw: Any) -> dict[str, Any]:
    """A unit as sd-webui-controlnet's API docs and clients send it (UI-only keys included)."""
    return {
        "enabled": True, "image": b64(drawing((64, 64))), "mask": None, "module": "canny", "model": model,
        "weight": 1.0, "resize_mode": "Crop and Resize", "low_vram": False, "processor_res": 64,
        "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 1.0,
        "control_mode": "Balanced", "pixel_perfect": False, **kw,
    }  # fmt: skip


def txt2img(
    c: httpx.Client,
    titles: dict[str, str],
    units: list[Any] | None = None,
    key: str = "controlnet",
    **kw: Any,
) -> httpx.Response:
    body: dict[str, Any] = {**FAST, "override_settings": {"sd_model_checkpoint": titles["checkpoint"]}, **kw}
    if units is not None:
        body["alwayson_scripts"] = {key: {"args": units}}
    return c.post("/sdapi/v1/txt2img", json=body)


def picture(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["images"][0])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def infotext(r: httpx.Response) -> dict[str, str]:
    return parse_infotext(json.loads(r.json()["info"])["infotexts"][0])


def test_routes_answer_like_the_extension(c: httpx.Client, data: Path) -> None:
    routes = extension_modules(data).routes
    assert c.get("/controlnet/version").json() == {"version": 2}
    assert c.get("/controlnet/model_list").json() == routes.model_list(data / "models")
    assert len(c.get("/controlnet/model_list").json()["model_list"]) == 3  # 2 ControlNets, 1 adapter
    assert c.get("/controlnet/module_list").json() == routes.module_list()
    assert c.get("/controlnet/module_list?alias_names=true").json() == routes.module_list(True)
    assert c.get("/api/v1/extensions/controlnet/model_list").json() == routes.model_list(data / "models")
    body = {"controlnet_module": "canny", "controlnet_input_images": [b64(drawing())]}
    r = c.post("/controlnet/detect", json=body)
    assert r.status_code == 200 and r.json()["info"] == "Success", r.text
    edges = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert 0 < np.asarray(edges.convert("L")).mean() < 128  # white edges on black
    r = c.post("/controlnet/detect", json={**body, "controlnet_module": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "controlnet_module", r.text


def test_an_unmodified_client_payload_changes_the_image_and_is_recorded(
    c: httpx.Client, titles: dict[str, str]
) -> None:
    plain = picture(txt2img(c, titles))
    for key in ("controlnet", "ControlNet"):  # as sd-webui-controlnet, the name in any case
        r = txt2img(c, titles, [unit(titles["sd1"]), unit("None", enabled=False)], key=key)
        controlled = picture(r)
        assert np.abs(controlled.astype(int) - plain).max() > 8
        info = infotext(r)
        assert info["ControlNet 0"].startswith(f"Module: canny, Model: {titles['sd1']}, Weight: 1,"), info
        assert "ControlNet 1" not in info
    assert np.array_equal(picture(txt2img(c, titles)), plain)  # the next job without units: no leak
    zero = txt2img(c, titles, [unit(titles["sd1"], weight=0)])
    assert np.array_equal(picture(zero), plain)


def test_start_and_end_steps_limit_the_unit(c: httpx.Client, titles: dict[str, str]) -> None:
    full = picture(txt2img(c, titles, [unit(titles["sd1"])]))
    late = picture(txt2img(c, titles, [unit(titles["sd1"], guidance_start=0.5)]))
    never = picture(txt2img(c, titles, [unit(titles["sd1"], guidance_start=1.0, guidance_end=1.0)]))
    plain = picture(txt2img(c, titles))
    assert not np.array_equal(late, full) and not np.array_equal(late, plain)
    assert np.array_equal(never, plain)  # step/total reaches 1 only after the last step


@pytest.mark.parametrize(
    ("units", "field", "words"),
    [
        ([{"module": "sobel_nope"}], "alwayson_scripts.controlnet.args[0].module", "unknown module"),
        (
            [{"model": "nope [00000000]"}],
            "alwayson_scripts.controlnet.args[0].model",
            "not in models/ControlNet",
        ),
        ([{"image": "bm90IGFuIGltYWdl"}], "alwayson_scripts.controlnet.args[0].image", "image"),
        ([{}, {"weight": 3}], "alwayson_scripts.controlnet.args[1].weight", "between 0 and 2"),
        ([{"module": "depth_midas"}], "alwayson_scripts.controlnet.args[0].module", "annotators"),
        ([{}] * 20, "alwayson_scripts.controlnet.args", "at most 8"),
    ],
)
def test_bad_units_are_422_naming_unit_and_field(
    c: httpx.Client, titles: dict[str, str], units: list[dict[str, Any]], field: str, words: str
) -> None:
    r = txt2img(c, titles, [unit(**{"model": titles["sd1"], **u}) for u in units])
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.text, r.text


def test_sdxl_controlnet_with_sd1_checkpoint_is_refused_and_the_server_goes_on(
    c: httpx.Client, titles: dict[str, str]
) -> None:
    r = txt2img(c, titles, [unit(titles["sd1"]), unit(titles["sdxl"])])
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "controlnet.args[1].model", r.text
    assert "SDXL" in r.text and "tiny-cn-sdxl" in r.text, r.text
    picture(txt2img(c, titles))


def test_img2img_uses_the_init_image_and_hires_reapplies_at_its_size(
    srv: Running, c: httpx.Client, titles: dict[str, str]
) -> None:
    init = b64(drawing((64, 64)))
    body = {**FAST, "init_images": [init], "denoising_strength": 0.8,
            "override_settings": {"sd_model_checkpoint": titles["checkpoint"]}}  # fmt: skip
    plain = picture(c.post("/sdapi/v1/img2img", json=body))
    no_image = unit(titles["sd1"], image=None)  # the unit reads the init image
    scripts = {"alwayson_scripts": {"controlnet": {"args": [no_image]}}}
    r = c.post("/sdapi/v1/img2img", json={**body, **scripts})
    assert not np.array_equal(picture(r), plain)
    assert "ControlNet 0" in infotext(r)
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6}
    plain_hr = picture(txt2img(c, titles, **hires))
    r = txt2img(c, titles, [unit(titles["sd1"])], **hires)
    assert picture(r).shape == (128, 128, 3)
    assert not np.array_equal(picture(r), plain_hr)
    # the second pass ran the unit at 128x128 (a map left at 64x64 would fail the ControlNet there)
    (info,) = [e for e in plugin_host(srv.services).extensions() if e.name == "controlnet"]
    assert info.last_job_error is None, info.last_job_error


def test_native_jobs_take_the_accordion_fields(c: httpx.Client, titles: dict[str, str]) -> None:
    ckpt = {"checkpoint": titles["checkpoint"]}

    def pixels(request: dict[str, Any]) -> np.ndarray:
        job_id = _submit(c, request)
        job = _wait_done(c, job_id)
        assert job["state"] == "done", job
        r = c.get(f"/api/v1/jobs/{job_id}/images/0")
        return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))

    image = "data:image/png;base64," + b64(drawing((64, 64)))
    fields = {"enabled": True, "image": image, "module": "canny", "model": titles["sd1"]}
    plain = pixels({**FAST, **ckpt})
    controlled = pixels({**FAST, **ckpt, "extension_args": {"controlnet": fields}})
    assert not np.array_equal(controlled, plain)
    off = pixels({**FAST, **ckpt, "extension_args": {"controlnet": {**fields, "enabled": False}}})
    assert np.array_equal(off, plain)
    bad = {
        "kind": "txt2img",
        "request": {**FAST, **ckpt, "extension_args": {"controlnet": {**fields, "threshold_a": 999}}},
    }
    r = c.post("/api/v1/jobs", json=bad)
    assert r.status_code == 422 and r.json()["field"] == "extension_args.controlnet.threshold_a", r.text


def test_png_info_reads_the_unit_back_into_the_accordion(
    srv: Running, c: httpx.Client, titles: dict[str, str]
) -> None:
    import gradio as gr

    from webui.ui.extension_sections import infotext_values
    from webui.ui.sendto import field_updates

    r = txt2img(c, titles, [unit("None", enabled=False), unit(titles["sd1"], weight=0.5, guidance_end=0.75)])
    text = json.loads(r.json()["info"])["infotexts"][0]
    host = plugin_host(srv.services)
    assert host is not None
    read = host.fields_from_infotext(parse_infotext(text))["controlnet"]
    assert read == {  # `ControlNet 1` goes to the Unit 1 tab; the other tabs are switched off
        "enabled": False, "unit2_enabled": False,
        "unit1_enabled": True, "unit1_module": "canny", "unit1_model": titles["sd1"], "unit1_weight": 0.5,
        "unit1_resize_mode": "Crop and Resize", "unit1_processor_res": 64, "unit1_threshold_a": 100,
        "unit1_threshold_b": 200, "unit1_guidance_start": 0, "unit1_guidance_end": 0.75,
        "unit1_pixel_perfect": False, "unit1_control_mode": "Balanced",
    }  # fmt: skip
    # a file whose hash changed since is found by its name; a model that is gone is left as it is
    old = text.replace(titles["sd1"], titles["sd1"].split(" [")[0] + " [0badc0de]")
    assert host.fields_from_infotext(parse_infotext(old))["controlnet"]["unit1_model"] == titles["sd1"]
    gone = host.fields_from_infotext(parse_infotext(text.replace(titles["sd1"], "gone [12345678]")))
    assert "unit1_model" not in gone["controlnet"] and gone["controlnet"]["unit1_module"] == "canny"
    plain = host.fields_from_infotext(parse_infotext("a cat\nSteps: 3, Seed: 1, Size: 64x64"))
    assert plain["controlnet"] == {"enabled": False, "unit1_enabled": False, "unit2_enabled": False}
    # the tab's accordion controls, as the studio builds them, get those values
    ui_fields = {f.name: f for f in host.ui_fields("controlnet")}
    fields = {
        "prompt": gr.Textbox(),
        "_ext.controlnet.unit1_module": gr.Dropdown(list(ui_fields["unit1_module"].choices)),
        "_ext.controlnet.unit1_weight": gr.Slider(0, 2),
        "_ext.controlnet.unit1_image": gr.Image(),
    }
    prompt, module, weight, image = field_updates(fields, infotext_values(host, text))
    assert (module, weight) == ("canny", 0.5)
    assert image == gr.skip() and prompt == gr.skip()


def test_the_studio_has_the_accordion_on_txt2img_img2img_and_inpaint(srv: Running) -> None:
    from webui.ui.studio import build_studio

    studio = build_studio(srv.services, secret="x" * 32)
    found = {getattr(b, "elem_id", None): b for b in studio.blocks.blocks.values()}
    for tab in ("txt2img", "img2img", "inpaint"):
        assert f"{tab}_ext_controlnet" in found, tab
        drop = found[f"{tab}_ext_controlnet_image"]
        assert type(drop).__name__ == "Image"
        models = [c[0] if isinstance(c, tuple) else c for c in found[f"{tab}_ext_controlnet_model"].choices]
        assert models[0] == "None" and any(m.startswith("tiny-cn-sd1-diffusers [") for m in models)
        for name in ("module", "weight", "guidance_start", "guidance_end", "control_mode", "resize_mode"):
            assert f"{tab}_ext_controlnet_{name}" in found, name
        assert f"{tab}_ext_controlnet_pixel_perfect" in found
        for i in range(3):  # sd-webui-controlnet's three unit tabs, each with its own fields and preview
            assert type(found[f"{tab}_ext_controlnet_controlnet_unit_{i}"]).__name__ == "Tab"
            assert found[f"{tab}_ext_controlnet_controlnet_unit_{i}"].label == f"ControlNet Unit {i}"
            assert f"{tab}_ext_controlnet_controlnet_unit_{i}_preview_button" in found
            name = "image" if i == 0 else f"unit{i}_image"
            assert type(found[f"{tab}_ext_controlnet_{name}"]).__name__ == "Image"
        assert f"{tab}_ext_controlnet_unit3_image" not in found


def test_the_preview_button_shows_the_preprocessed_map(srv: Running) -> None:
    from webui.ui.extension_sections import run_preview

    host = plugin_host(srv.services)
    ((_, section),) = [(n, s) for n, s in host.ui_sections("txt2img") if n == "controlnet"]
    assert section.preview is not None
    values = {f.name: f.default for f in section.fields}
    values.update(image=drawing((64, 64)), module="canny", processor_res=64.0)  # Gradio's float
    shown = run_preview(host, "controlnet", section, *values.values())
    routes = extension_modules(srv.config.data_dir).routes
    body = {"controlnet_module": "canny", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    expected = Image.open(io.BytesIO(base64.b64decode(routes.detect(body)["images"][0])))
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected.convert("RGB")))
    import gradio as gr

    with pytest.warns(UserWarning, match="image"):  # no image: a warning, the picture unchanged
        assert run_preview(host, "controlnet", section, *{**values, "image": None}.values()) == gr.skip()


def test_two_units_compose_and_native_clients_may_send_the_unit_list(
    c: httpx.Client, titles: dict[str, str]
) -> None:
    one = picture(txt2img(c, titles, [unit(titles["sd1"])]))
    other = unit(titles["sd1"], module="invert", image=b64(Image.new("RGB", (64, 64), (30, 200, 90))))
    second = picture(txt2img(c, titles, [other]))
    both = txt2img(c, titles, [unit(titles["sd1"]), other])
    assert not np.array_equal(picture(both), one) and not np.array_equal(picture(both), second)
    assert {"ControlNet 0", "ControlNet 1"} <= set(infotext(both))
    ckpt = {"checkpoint": titles["checkpoint"]}
    job_id = _submit(c, {**FAST, **ckpt, "extension_args": {"controlnet": {"_units": [unit(titles["sd1"])]}}})
    assert _wait_done(c, job_id)["state"] == "done"
    listed = c.get(f"/api/v1/jobs/{job_id}/images/0").content
    fields = {k: v for k, v in unit(titles["sd1"]).items() if k not in ("mask", "low_vram")}
    job_id = _submit(c, {**FAST, **ckpt, "extension_args": {"controlnet": fields}})  # the accordion's way
    assert _wait_done(c, job_id)["state"] == "done"
    accordion = c.get(f"/api/v1/jobs/{job_id}/images/0").content
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(listed)).convert("RGB")),
        np.asarray(Image.open(io.BytesIO(accordion)).convert("RGB")),
    )

    # the accordion's tabs 0 and 2 (as the UI sends them): two units, the same picture as the list
    def job_picture(args: dict[str, Any]) -> np.ndarray:
        job_id = _submit(c, {**FAST, **ckpt, "extension_args": {"controlnet": args}})
        assert _wait_done(c, job_id)["state"] == "done"
        raw = c.get(f"/api/v1/jobs/{job_id}/images/0").content
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))

    tab2 = {f"unit2_{k}": v for k, v in other.items() if k not in ("mask", "low_vram")}
    tabs = job_picture({**fields, **tab2})
    assert np.array_equal(tabs, job_picture({"_units": [unit(titles["sd1"]), other]}))
    assert not np.array_equal(tabs, np.asarray(Image.open(io.BytesIO(accordion)).convert("RGB")))
    bad = {"controlnet": {"_units": [unit(titles["sd1"]), unit(titles["sd1"], guidance_start=2)]}}
    r = c.post("/api/v1/jobs", json={"kind": "txt2img", "request": {**FAST, **ckpt, "extension_args": bad}})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "extension_args.controlnet._units[1].guidance_start", r.text


def test_inpaint_with_a_unit(c: httpx.Client, titles: dict[str, str]) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {**FAST, "init_images": [b64(drawing((64, 64)))], "mask": b64(mask), "denoising_strength": 0.9,
            "override_settings": {"sd_model_checkpoint": titles["checkpoint"]}}  # fmt: skip
    plain = picture(c.post("/sdapi/v1/img2img", json=body))
    scripts = {"alwayson_scripts": {"controlnet": {"args": [unit(titles["sd1"])]}}}
    controlled = picture(c.post("/sdapi/v1/img2img", json={**body, **scripts}))
    assert not np.array_equal(controlled, plain)
    outside = np.asarray(mask) == 0
    assert not np.array_equal(controlled[~outside], plain[~outside])  # the masked area changed


def test_a_t2i_adapter_unit(c: httpx.Client, titles: dict[str, str]) -> None:
    names = c.get("/controlnet/model_list").json()["model_list"]
    adapter = next(n for n in names if n.startswith("tiny-t2i-sd1-diffusers ["))
    plain = picture(txt2img(c, titles))
    r = txt2img(c, titles, [unit(adapter)])
    assert not np.array_equal(picture(r), plain)
    assert f"Model: {adapter}," in infotext(r)["ControlNet 0"]
    assert np.array_equal(picture(txt2img(c, titles)), plain)
