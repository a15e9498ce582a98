"""Walk A1111's request schemas field by field: every field Sfumato accepts is honoured or refused.

The field lists come from the A1111 API reference (tests/reference/a1111-api.md, read from A1111 v1.10's
`modules/api/models.py`) and from our own pydantic payloads. For each field a non-default value is sent
next to a baseline request; the answer must either differ from the baseline's (pixels, infotext, info,
number of images or files saved) or be a 422 that names the field. A field silently ignored fails.

One server (tiny SD1 model, 64 px, 1-2 steps) is shared by the module; baselines are cached.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_server_harness import make_manager, running_server
from webui.api.extras_api import A1111ExtrasSingle
from webui.api.schemas import A1111Img2Img, A1111Txt2Img
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.networks.tiny import write_tiny_lora
from webui.core.settings import SPECS

REFERENCE = Path(__file__).parent / "reference" / "a1111-api.md"
FAST: dict[str, Any] = {
    "prompt": "a red cube",
    "steps": 2,
    "width": 64,
    "height": 64,
    "seed": 7,
    "subseed": 3,
}


def reference_fields() -> dict[str, list[str]]:
    """{"base"|"txt2img"|"img2img": [field names]} from the reference's request section."""
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split("## txt2img / img2img request", 1)[1].split("\n## ", 1)[0]
    section = re.sub(r"\([^)]*\)", "", section.replace("\n", " "))
    parts = re.split(r"(Base:|txt2img adds:|img2img adds:)", section)
    out: dict[str, list[str]] = {}
    for label, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.split(".  ")[0].split("`override_settings.")[0]
        names = [m.group(1) for tok in body.split(",") if (m := re.match(r"\s*([a-z_][a-z0-9_]*)", tok))]
        out[label.split()[0].rstrip(":").lower()] = names
    return out


def _png(size: tuple[int, int], colour: tuple[int, int, int], box: bool = False) -> str:
    image = Image.new("RGB", size, colour)
    if box:
        image.paste((255, 255, 255), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


INIT = _png((64, 64), (200, 40, 40), box=True)
WIDE = _png((96, 48), (40, 160, 60), box=True)
MASK = _png((64, 64), (0, 0, 0), box=True)
HR = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.6}
CHURN = {"s_churn": 1.0}
MASKED = {"mask": MASK}


@dataclass(frozen=True)
class Case:
    value: Any
    base: dict[str, Any] = field(default_factory=dict)


COMMON: dict[str, Case] = {
    "prompt": Case("a blue sphere"),
    "negative_prompt": Case("blurry"),
    "styles": Case(["no such style"]),
    "seed": Case(8),
    "subseed": Case(5, {"subseed_strength": 0.5}),
    "subseed_strength": Case(0.5),
    "seed_resize_from_h": Case(32, {"seed_resize_from_w": 32}),
    "seed_resize_from_w": Case(32, {"seed_resize_from_h": 32}),
    "sampler_name": Case("Euler a"),
    "sampler_index": Case("Euler a"),
    "scheduler": Case("Karras"),
    "batch_size": Case(2),
    "n_iter": Case(2),
    "steps": Case(1),
    "cfg_scale": Case(2.0),
    "width": Case(96),
    "height": Case(96),
    "restore_faces": Case(True),
    "tiling": Case(True),
    "do_not_save_samples": Case(True, {"save_images": True}),
    "do_not_save_grid": Case(True, {"batch_size": 2, "save_images": True}),
    "eta": Case(0.3, {"sampler_name": "Euler a"}),
    "s_min_uncond": Case(2.0),
    "s_churn": Case(1.0),
    "s_tmax": Case(2.0, {**CHURN, "steps": 4}),
    "s_tmin": Case(5.0, CHURN),
    "s_noise": Case(0.5, CHURN),
    "override_settings": Case({"CLIP_stop_at_last_layers": 2}),
    "override_settings_restore_afterwards": Case(False),
    "refiner_checkpoint": Case("tiny-sd1b", {"refiner_switch_at": 0.5}),
    "refiner_switch_at": Case(0.9, {"refiner_checkpoint": "tiny-sd1b", "refiner_switch_at": 0.5, "steps": 4}),
    "disable_extra_networks": Case(True, {"prompt": "a red cube <lora:detail:1>"}),
    "script_name": Case("no such script"),
    "script_args": Case([1, 2]),
    "send_images": Case(False),
    "save_images": Case(True),
    "alwayson_scripts": Case({"no such script": {"args": []}}),
    "infotext": Case("a blue sphere\nSteps: 1, Seed: 3"),
    "comments": Case({"note": "hello"}),
    "force_task_id": Case("task(abc)"),
    "outpath_samples": Case("/tmp/elsewhere"),
    "outpath_grids": Case("/tmp/elsewhere"),
    "sampler_noise_scheduler_override": Case("karras"),
    "forge_additional_modules": Case(["no-such-module.safetensors"]),
}
TXT2IMG: dict[str, Case] = {
    **COMMON,
    "denoising_strength": Case(0.3, HR),
    "enable_hr": Case(True),
    "hr_scale": Case(2.0, HR),
    "hr_upscaler": Case("Latent (nearest)", HR),
    "hr_second_pass_steps": Case(1, HR),
    "hr_resize_x": Case(80, HR),
    "hr_resize_y": Case(80, HR),
    "hr_checkpoint_name": Case("tiny-sd1b", HR),
    "hr_sampler_name": Case("Euler a", HR),
    "hr_scheduler": Case("Karras", HR),
    "hr_prompt": Case("a green cone", HR),
    "hr_negative_prompt": Case("dark", HR),
    "hr_additional_modules": Case(["no-such-module.safetensors"], HR),
    "firstphase_width": Case(64, {**HR, "width": 96}),
    "firstphase_height": Case(64, {**HR, "height": 96}),
}
IMG2IMG: dict[str, Case] = {
    **COMMON,
    "init_images": Case([WIDE]),
    "resize_mode": Case(1, {"init_images": [WIDE]}),
    "denoising_strength": Case(0.4),
    "image_cfg_scale": Case(2.5),
    "mask": Case(MASK),
    "mask_blur": Case(12, MASKED),
    "mask_blur_x": Case(12, MASKED),
    "mask_blur_y": Case(12, MASKED),
    "mask_round": Case(False, {**MASKED, "mask_blur": 8}),
    "inpainting_fill": Case(2, MASKED),
    "inpaint_full_res": Case(False, MASKED),
    "inpaint_full_res_padding": Case(4, MASKED),
    "inpainting_mask_invert": Case(1, MASKED),
    "initial_noise_multiplier": Case(0.5),
    "include_init_images": Case(True),
    "latent_mask": Case(MASK, MASKED),
    "outpaint_pixels": Case(16),
    "outpaint_directions": Case(["left"], {"outpaint_pixels": 16}),
    "outpaint_fill": Case("matched", {"outpaint_pixels": 16}),
    "outpaint_noise": Case(0.8, {"outpaint_pixels": 16}),
    "outpaint_falloff": Case(0.3, {"outpaint_pixels": 16, "outpaint_fill": "matched"}),
    "outpaint_color_variation": Case(0.9, {"outpaint_pixels": 16, "outpaint_fill": "matched"}),
    "differential_diffusion": Case(True, {**MASKED, "mask_blur": 8}),
}
EXTRAS: dict[str, Case] = {
    "image": Case(WIDE),
    "resize_mode": Case(1, {"upscaler_1": "Lanczos", "upscaling_resize_w": 80, "upscaling_resize_h": 40}),
    "show_extras_results": Case(False),
    "gfpgan_visibility": Case(0.5),
    "codeformer_visibility": Case(0.5),
    "upscaling_resize": Case(3.0),
    "upscaling_resize_w": Case(96, {"resize_mode": 1}),
    "upscaling_resize_h": Case(96, {"resize_mode": 1}),
    "upscaling_crop": Case(False, {"resize_mode": 1, "upscaling_resize_w": 128, "upscaling_resize_h": 64}),
    "upscaler_1": Case("Nearest"),
    "upscaler_2": Case("Nearest", {"extras_upscaler_2_visibility": 0.5}),
    "extras_upscaler_2_visibility": Case(0.5, {"upscaler_2": "Nearest"}),
}
EXTRAS_BASE: dict[str, Any] = {"image": INIT, "upscaler_1": "Lanczos", "upscaling_resize": 2.0}
# Accepted fields whose value legitimately changes nothing in this setting, and why.
NOT_WALKED = {
    ("txt2img", "distilled_cfg_scale"): "Forge's: Flux dev's guidance input (tests/test_flow_*.py)",
    ("img2img", "distilled_cfg_scale"): "Forge's: Flux dev's guidance input (tests/test_flow_*.py)",
    ("extras", "upscale_first"): "A1111 1.10 ignores it too: always upscale, then face restoration",
    ("extras", "codeformer_weight"): "acts with codeformer_visibility > 0 only, which needs a CodeFormer "
    "model file (tests/test_faces_http.py)",
}
ENDPOINTS = {
    "txt2img": ("/sdapi/v1/txt2img", TXT2IMG, A1111Txt2Img, FAST),
    "img2img": ("/sdapi/v1/img2img", IMG2IMG, A1111Img2Img, {**FAST, "init_images": [INIT]}),
    "extras": ("/sdapi/v1/extra-single-image", EXTRAS, A1111ExtrasSingle, EXTRAS_BASE),
}
CASES = [(kind, name) for kind, (_, table, _, _) in ENDPOINTS.items() for name in table]


def test_reference_lists_the_a1111_fields() -> None:
    ref = reference_fields()
    assert {"prompt", "seed", "override_settings", "infotext", "sampler_index"} <= set(ref["base"])
    assert {"enable_hr", "firstphase_width", "hr_negative_prompt"} <= set(ref["txt2img"])
    assert {"init_images", "include_init_images", "mask_round"} <= set(ref["img2img"])


@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_every_reference_field_is_accepted_and_walked(kind: str) -> None:
    ref = reference_fields()
    _, table, schema, _ = ENDPOINTS[kind]
    for name in [*ref["base"], *ref[kind]]:
        assert name in schema.model_fields, f"{kind}: A1111 field {name} is not in our payload"
        assert name in table, f"{kind}: A1111 field {name} has no case"


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_every_accepted_field_is_walked(kind: str) -> None:
    _, table, schema, _ = ENDPOINTS[kind]
    for name in schema.model_fields:
        assert name in table or (kind, name) in NOT_WALKED, f"{kind}: accepted field {name} has no case"


@dataclass(frozen=True)
class Outcome:
    status: int
    body: Any
    signature: tuple[Any, ...] = ()


class Api:
    def __init__(self, client: httpx.Client, outputs: Path) -> None:
        self.client = client
        self.outputs = outputs
        self.cache: dict[str, Outcome] = {}

    def _files(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.outputs)) if self.outputs.exists() else 0

    def outcome(self, path: str, payload: dict[str, Any], cache: bool = False) -> Outcome:
        key = path + json.dumps(payload, sort_keys=True)
        if cache and key in self.cache:
            return self.cache[key]
        before = self._files()
        r = self.client.post(path, json=payload)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        signature: tuple[Any, ...] = ()
        if r.status_code == 200:
            encoded = body.get("images", [body["image"]] if body.get("image") else [])
            pictures = [Image.open(io.BytesIO(base64.b64decode(b))) for b in encoded]
            info = json.loads(body["info"]) if isinstance(body.get("info"), str) else body.get("html_info")
            if isinstance(info, dict):
                info = {k: v for k, v in info.items() if k != "job_timestamp"}
            signature = (
                tuple((p.size, p.convert("RGB").tobytes()) for p in pictures),
                json.dumps(info, sort_keys=True, default=str),
                self._files() - before,
                json.dumps({k: body.get("parameters", {}).get(k) for k in ("init_images", "mask")}),
            )
        out = Outcome(r.status_code, body, signature)
        if cache:
            self.cache[key] = out
        return out


@pytest.fixture(scope="module")
def api(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("walk")
    data = tmp / "data"
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    os.symlink(tiny_files["sd1"], ckpts / "tiny-sd1.safetensors")
    save_single_file(build_tiny("sd1", seed=1), ckpts / "tiny-sd1b.safetensors")
    write_tiny_lora(
        data / "models" / "Lora" / "detail.safetensors", load_model(tiny_files["sd1"], Precision())
    )
    with running_server(data, tmp, manager=make_manager(data, tmp)) as srv, srv.client() as client:
        yield Api(client, srv.config.outputs_dir)


def _names_field(body: Any, name: str) -> bool:
    if not isinstance(body, dict):
        return False
    if body.get("field") is not None:
        return bool(body["field"] == name or str(body["field"]).startswith(name + "."))
    detail = body.get("detail")
    locs = [d.get("loc", []) for d in detail] if isinstance(detail, list) else []
    return any(name in loc for loc in locs)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}.{n}" for k, n in CASES])
def test_field_is_honoured_or_refused(api: Api, kind: str, name: str) -> None:
    path, table, _, fast = ENDPOINTS[kind]
    case = table[name]
    base = {**fast, **case.base}
    before = api.outcome(path, base, cache=True)
    assert before.status == 200, before.body
    after = api.outcome(path, {**base, name: case.value})
    if after.status == 422:
        assert _names_field(after.body, name), after.body
        return
    assert after.status == 200, after.body
    assert after.signature != before.signature, f"{kind}.{name}={case.value!r} changed nothing"


# -- /sdapi/v1/options: a value of the wrong type is a 422 naming the key, and nothing is saved -------------


def _wrong_value(current: Any) -> Any:
    if isinstance(current, bool):
        return "not a boolean"
    if isinstance(current, int | float):
        return "not a number"
    if isinstance(current, str):
        return {"not": "a string"}
    if isinstance(current, list):
        return 12
    return {"nested": {"deep": [1, {"x": None}]}}


OPTION_KEYS = sorted(SPECS)


@pytest.mark.parametrize("key", OPTION_KEYS)
def test_options_wrong_type_is_422_naming_the_key(api: Api, key: str) -> None:
    before = api.client.get("/sdapi/v1/options").json()
    r = api.client.post("/sdapi/v1/options", json={key: _wrong_value(before.get(key))})
    assert r.status_code == 422, (key, r.text)
    assert _names_field(r.json(), key), r.text
    assert api.client.get("/sdapi/v1/options").json() == before


# -- the fields fixed after the walk found them ignored, checked for what they should do ---------------------


def test_firstphase_size_is_the_first_pass_and_width_height_the_hires_target(api: Api) -> None:
    payload = {**FAST, **HR, "width": 96, "height": 96, "firstphase_width": 64, "firstphase_height": 64}
    out = api.outcome("/sdapi/v1/txt2img", payload)
    assert out.status == 200, out.body
    info = json.loads(out.body["info"])
    assert (info["width"], info["height"]) == (64, 64)  # the first pass
    assert out.signature[0][0][0] == (96, 96)  # the hires target, not 64 x hr_scale


def test_disable_extra_networks_equals_the_prompt_without_its_tags(api: Api) -> None:
    plain = api.outcome("/sdapi/v1/txt2img", FAST, cache=True)
    tagged = {**FAST, "prompt": FAST["prompt"] + " <lora:detail:1>"}
    with_lora = api.outcome("/sdapi/v1/txt2img", tagged)
    disabled = api.outcome("/sdapi/v1/txt2img", {**tagged, "disable_extra_networks": True})
    assert with_lora.signature[0] != plain.signature[0]
    assert disabled.signature[0] == plain.signature[0]
    assert "Lora hashes" not in json.loads(disabled.body["info"])["infotexts"][0]


def test_include_init_images_echoes_them_in_parameters(api: Api) -> None:
    payload = {**FAST, "init_images": [INIT], "mask": MASK}
    assert api.outcome("/sdapi/v1/img2img", payload).body["parameters"]["init_images"] is None
    body = api.outcome("/sdapi/v1/img2img", {**payload, "include_init_images": True}).body
    assert body["parameters"]["init_images"] == [INIT] and body["parameters"]["mask"] == MASK
