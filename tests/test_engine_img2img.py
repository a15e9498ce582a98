"""img2img, inpainting, outpainting and hires fix through `Engine.run` on the tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.tasks import hires
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest

BASE: dict[str, Any] = dict(
    prompt="a red apple", negative_prompt="blurry", steps=4, seed=5, width=64, height=64
)


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs"), manager)


def _picture(w: int = 64, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _mask(w: int = 64, h: int = 64) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).rectangle((16, 16, 40, 40), fill=255)
    return m


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1-inpaint"])
def test_inpaint_keeps_every_pixel_outside_an_unblurred_mask(engine: Engine, checkpoint: str) -> None:
    init, mask = _picture(), _mask()
    r = engine.run(
        Img2ImgRequest(
            **BASE, init_images=(init,), mask=mask, mask_blur=0, denoising_strength=1.0, checkpoint=checkpoint
        )
    )
    out = np.asarray(r.images[0].image)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])
    path = r.images[0].path
    assert path is not None and path.parent.parent.name == "img2img-images"
    info = parse_infotext(read_infotext(path) or "")
    assert (
        info["Denoising strength"] == "1" and "Init image hash" in info and "Mask blur" not in info
    )  # 0: not written (A1111)


def test_only_masked_touches_nothing_outside_the_padded_box(engine: Engine) -> None:
    init, mask = _picture(128, 128), Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((60, 60, 70, 70), fill=255)
    r = engine.run(
        Img2ImgRequest(
            **{**BASE, "width": 64, "height": 64},
            init_images=(init,),
            mask=mask,
            mask_blur=2,
            inpaint_full_res=True,
            inpaint_full_res_padding=8,
            denoising_strength=0.9,
        )
    )
    out = np.asarray(r.images[0].image)
    assert out.shape == (128, 128, 3)  # the original's size: the crop is pasted back
    outside = np.ones((128, 128), bool)
    outside[40:91, 40:91] = False  # generous box around mask + padding + blur
    assert np.array_equal(out[outside], np.asarray(init)[outside])


def test_strength_zero_returns_the_input_within_vae_error(engine: Engine) -> None:
    init = Image.new("RGB", (64, 64), (120, 60, 200))
    r = engine.run(Img2ImgRequest(**BASE, init_images=(init,), denoising_strength=0.0))
    again = engine.run(Img2ImgRequest(**BASE, init_images=(init,), denoising_strength=0.0))
    assert np.array_equal(np.asarray(r.images[0].image), np.asarray(again.images[0].image))
    changed = engine.run(Img2ImgRequest(**BASE, init_images=(init,), denoising_strength=1.0))
    assert not np.array_equal(np.asarray(r.images[0].image), np.asarray(changed.images[0].image))


def test_outpaint_extends_the_canvas_and_keeps_the_original(engine: Engine) -> None:
    init = _picture(64, 64)
    r = engine.run(
        Img2ImgRequest(
            **BASE,
            init_images=(init,),
            outpaint_pixels=32,
            outpaint_directions=("left", "down"),
            mask_blur=0,
            denoising_strength=0.8,
        )
    )
    out = r.images[0].image
    assert out.size == (96, 96)
    assert np.array_equal(np.asarray(out)[0:64, 32:96], np.asarray(init))
    assert parse_infotext(r.images[0].infotext)["Size"] == "96x96"


def test_several_init_images_make_the_batch(engine: Engine) -> None:
    a, b = _picture(), Image.new("RGB", (64, 64), (10, 200, 10))
    r = engine.run(Img2ImgRequest(**BASE, init_images=(a, b), batch_size=2, denoising_strength=0.3))
    assert len(r.images) == 2 and r.seeds == [5, 6]
    hashes = {parse_infotext(i.infotext)["Init image hash"] for i in r.images}
    assert len(hashes) == 2


def test_bad_init_image_is_a_request_error_naming_the_field(engine: Engine) -> None:
    with pytest.raises(RequestError) as e:
        engine.run(Img2ImgRequest(**BASE, init_images=()))
    assert e.value.field == "init_images"


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_makes_the_target_size_and_its_infotext_reproduces_it(
    engine: Engine, upscaler: str
) -> None:
    req = Txt2ImgRequest(
        **BASE,
        enable_hr=True,
        hr_scale=1.5,
        hr_upscaler=upscaler,
        hr_second_pass_steps=3,
        denoising_strength=0.6,
    )
    r = engine.run(req)
    assert r.images[0].image.size == (96, 96)
    info = parse_infotext(r.images[0].infotext)
    assert info["Hires upscaler"] == upscaler and info["Size"] == "64x64"
    fields = hires.fields_from_infotext(info)
    again = engine.run(
        Txt2ImgRequest(
            prompt=info["Prompt"],
            negative_prompt=info["Negative prompt"],
            steps=int(info["Steps"]),
            seed=int(info["Seed"]),
            width=64,
            height=64,
            **fields,  # type: ignore[arg-type]
        )
    )
    assert np.array_equal(np.asarray(r.images[0].image), np.asarray(again.images[0].image))
    plain = engine.run(Txt2ImgRequest(**BASE))
    assert plain.images[0].image.size == (64, 64)


def test_on_image_sees_each_image_after_it_is_saved(engine: Engine) -> None:
    seen: list[bool] = []
    engine.run(
        Txt2ImgRequest(**{**BASE, "steps": 2}, batch_size=2),
        on_image=lambda img: seen.append(img.path is not None and img.path.exists()),
    )
    assert seen == [True, True]


def test_an_interrupted_inpaint_keeps_its_partial_picture_and_every_pixel_outside_the_mask(
    engine: Engine,
) -> None:
    from webui.core.engine import JobProgress
    from webui.core.sampling.loop import CancelToken

    cancel = CancelToken()

    def progress(p: JobProgress) -> None:
        if p.step == 2:
            cancel.interrupt()

    init, mask = _picture(), _mask()
    request = Img2ImgRequest(
        **{**BASE, "steps": 8}, init_images=(init,), mask=mask, mask_blur=0, denoising_strength=1.0,
        checkpoint="tiny-sd1",
    )  # fmt: skip
    r = engine.run(request, progress=progress, cancel=cancel)
    assert r.interrupted and len(r.images) == 1 and r.images[0].path is not None
    out = np.asarray(r.images[0].image)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    whole = np.asarray(engine.run(request).images[0].image)
    assert not np.array_equal(out[~keep], whole[~keep])  # stopped early: not the finished picture
    assert "Denoising strength: 1" in r.images[0].infotext
