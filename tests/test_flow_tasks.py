"""img2img, inpainting and hires fix for SD3 / SD3.5 and Flux.1 through `Engine.run` (tiny models):
sizes, seeds, variation seeds and batches, the pixels outside a mask, infotext and its read-back
(PNG Info), and a clear 422 for what does not fit the family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.core import families
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.tasks import hires
from webui.core.types import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.ui.params import from_infotext

CHECKPOINTS = {"sd3-aio": ("sd3", "stability"), "flux-dev-aio": ("flux-dev", "comfy")}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("flow-tasks")
    for name, (arch, layout) in CHECKPOINTS.items():
        model = build_tiny_flow(arch, seed=3)
        save(single_file(model, layout), root / "models" / "Stable-diffusion" / f"{name}.safetensors")
    config = AppConfig.for_data_dir(root, outputs_dir=root / "outputs", hashing=False)
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


def _base(name: str) -> dict[str, Any]:
    defaults = families.family(CHECKPOINTS[name][0]).defaults
    return dict(
        prompt="a red apple",
        negative_prompt="blurry",
        checkpoint=name,
        seed=11,
        steps=4,
        sampler_name="Euler",
        cfg_scale=defaults.cfg_scale,
        width=96,
        height=64,
    )


def _picture(w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _mask(w: int = 96, h: int = 64) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).rectangle((12, 10, 40, 30), fill=255)
    return m


def _img2img(name: str, **kw: Any) -> Img2ImgRequest:
    args = {**_base(name), "init_images": (_picture(),), "denoising_strength": 0.5, **kw}
    return Img2ImgRequest(**args)


def _pixels(result: GenerationResult, i: int = 0) -> np.ndarray:
    return np.asarray(result.images[i].image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_img2img_follows_the_init_image_and_its_infotext_reads_back(name: str, engine: Engine) -> None:
    other = (Image.new("RGB", (96, 64), "teal"),)
    light = engine.run(_img2img(name, denoising_strength=0.25))
    assert light.images[0].image.size == (96, 64)
    # below strength 1 the picture grows from the init image; at 1 from the noise alone (the init
    # is not read: the flow starts at sigma 1)
    light_other = engine.run(_img2img(name, denoising_strength=0.25, init_images=other, save_images=False))
    assert not np.array_equal(_pixels(light), _pixels(light_other))
    strong = engine.run(_img2img(name, denoising_strength=1.0, save_images=False))
    strong_other = engine.run(_img2img(name, denoising_strength=1.0, init_images=other, save_images=False))
    assert np.array_equal(_pixels(strong), _pixels(strong_other))
    assert not np.array_equal(_pixels(strong), _pixels(light))
    path = light.images[0].path
    assert path is not None and path.parent.parent.name == "img2img-images"
    text = read_infotext(path) or ""
    params = parse_infotext(text)
    assert params["Denoising strength"] == "0.25" and "Init image hash" in params
    assert params["Sampler"] == "Euler" and params["Schedule type"] == "Simple"
    fields = from_infotext(text)
    assert fields["denoising_strength"] == 0.25 and fields["seed"] == 11
    if families.family(CHECKPOINTS[name][0]).distilled_guidance:
        assert fields["distilled_cfg_scale"] == 3.5
    again = engine.run(_img2img(name, **{k: fields[k] for k in ("denoising_strength", "seed", "steps")}))
    assert np.array_equal(_pixels(again), _pixels(light))


@pytest.mark.parametrize("name", list(CHECKPOINTS))
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_inpaint_keeps_every_pixel_outside_an_unblurred_mask(
    name: str, strength: float, engine: Engine
) -> None:
    init, mask = _picture(), _mask()
    r = engine.run(_img2img(name, mask=mask, mask_blur=0, denoising_strength=strength, save_images=False))
    out = np.asarray(r.images[0].image)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])
    params = parse_infotext(r.images[0].infotext)
    assert params["Denoising strength"] == str(strength).rstrip("0").rstrip(".")


def test_only_masked_with_latent_noise_keeps_the_rest_of_the_picture(engine: Engine) -> None:
    init, mask = _picture(), _mask()
    req = _img2img(
        "flux-dev-aio",
        mask=mask,
        mask_blur=0,
        inpaint_full_res=True,
        inpaint_full_res_padding=4,
        inpainting_fill=2,
        denoising_strength=0.8,
        save_images=False,
    )
    r = engine.run(req)
    out, keep = np.asarray(r.images[0].image), np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])
    params = parse_infotext(r.images[0].infotext)
    assert params["Inpaint area"] == "Only masked" and params["Masked content"] == "latent noise"


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_batch_items_are_the_single_runs_with_their_seeds(name: str, engine: Engine) -> None:
    """Image i of a batch is the single run with seed + i; with a variation, the same seed and
    subseed + i (A1111's rule); img2img and txt2img."""
    makers = (lambda **kw: _img2img(name, **kw), lambda **kw: Txt2ImgRequest(**{**_base(name), **kw}))
    for make in makers:
        batch = engine.run(make(batch_size=2, save_images=False))
        assert batch.seeds == [11, 12] and not np.array_equal(_pixels(batch, 0), _pixels(batch, 1))
        single = engine.run(make(seed=12, save_images=False))
        assert np.array_equal(_pixels(single), _pixels(batch, 1))
        varied = engine.run(make(batch_size=2, subseed=40, subseed_strength=0.3, save_images=False))
        assert [(i.seed, i.subseed) for i in varied.images] == [(11, 40), (11, 41)]
        assert not np.array_equal(_pixels(varied, 0), _pixels(batch, 0))  # the variation acts
        alone = engine.run(make(subseed=41, subseed_strength=0.3, save_images=False))
        assert np.array_equal(_pixels(alone), _pixels(varied, 1))
        assert "Variation seed: 41, Variation seed strength: 0.3" in varied.images[1].infotext


@pytest.mark.parametrize("name", list(CHECKPOINTS))
@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_makes_the_target_size_and_its_infotext_reproduces_it(
    name: str, upscaler: str, engine: Engine
) -> None:
    req = Txt2ImgRequest(
        **_base(name),
        enable_hr=True,
        hr_scale=2.0,
        hr_upscaler=upscaler,
        hr_second_pass_steps=3,
        denoising_strength=0.5,
        save_images=False,
    )
    r = engine.run(req)
    assert r.images[0].image.size == (192, 128)
    info = parse_infotext(r.images[0].infotext)
    assert info["Hires upscaler"] == upscaler and info["Size"] == "96x64"
    assert info["Denoising strength"] == "0.5" and info["Hires steps"] == "3"
    again = engine.run(Txt2ImgRequest(**_base(name), save_images=False, **hires.fields_from_infotext(info)))  # type: ignore[arg-type]
    assert np.array_equal(_pixels(r), _pixels(again))
    first = engine.run(Txt2ImgRequest(**_base(name), save_images=False))
    upscaled = np.asarray(first.images[0].image.resize((192, 128), Image.Resampling.LANCZOS), dtype=np.int16)
    assert not np.array_equal(_pixels(r), upscaled)  # the second pass ran


def test_hires_second_pass_takes_a_flow_sampler_by_its_flow_name(engine: Engine) -> None:
    req = Txt2ImgRequest(
        **_base("sd3-aio"),
        enable_hr=True,
        hr_scale=1.5,
        hr_sampler_name="Euler a",
        hr_scheduler="Karras",  # a flow schedule only: the request is valid for this model
        save_images=False,
    )
    image = engine.run(req).images[0]
    assert image.image.size == (144, 96)
    assert "Hires sampler: Euler a," in image.infotext and "Hires schedule type: Karras" in image.infotext


def test_what_does_not_fit_the_family_is_a_clear_422(engine: Engine) -> None:
    with pytest.raises(RequestError) as e:  # 96 x 1.25 = 120: not a multiple of 16
        engine.run(Txt2ImgRequest(**_base("flux-dev-aio"), enable_hr=True, hr_scale=1.25))
    assert e.value.field == "hr_scale" and "multiple of 16" in e.value.message
    with pytest.raises(RequestError) as e:
        engine.run(Txt2ImgRequest(**_base("sd3-aio"), enable_hr=True, hr_sampler_name="DDIM"))
    assert e.value.field == "hr_sampler_name" and "SD3" in e.value.message
    with pytest.raises(RequestError) as e:  # 96 + 8 on the right: 104 wide
        engine.run(_img2img("flux-dev-aio", outpaint_pixels=8, outpaint_directions=("right",)))
    assert e.value.field == "outpaint_pixels" and "multiple of 16" in e.value.message
    out = engine.run(_img2img("flux-dev-aio", outpaint_pixels=16, outpaint_directions=("right",)))
    assert out.images[0].image.size == (112, 64)
