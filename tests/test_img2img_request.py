"""Img2ImgRequest (and the hires fields of Txt2ImgRequest): defaults, shorthands, field-named errors."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from webui.core.types import GenerationRequest, Img2ImgRequest, RequestError, Txt2ImgRequest


def _img(w: int = 64, h: int = 64) -> Image.Image:
    return Image.new("RGB", (w, h), (120, 130, 140))


def _req(**kw: object) -> Img2ImgRequest:
    args: dict[str, object] = dict(prompt="a cat", width=64, height=64, init_images=(_img(),))
    args.update(kw)
    return Img2ImgRequest(**args)  # type: ignore[arg-type]


def test_defaults_are_a1111s_ui_defaults() -> None:
    r = _req()
    assert isinstance(r, GenerationRequest)
    assert (r.resize_mode, r.denoising_strength, r.mask_blur_x, r.mask_blur_y) == (0, 0.75, 4, 4)
    assert (r.inpainting_fill, r.inpaint_full_res, r.inpaint_full_res_padding) == (1, False, 32)
    assert (r.inpainting_mask_invert, r.initial_noise_multiplier, r.image_cfg_scale) == (0, 1.0, None)
    assert r.mask is None and r.mask_round is True and r.outpaint_pixels == 0
    r.validate()


def test_txt2img_keeps_its_fields_and_gains_hires_ones() -> None:
    t = Txt2ImgRequest(prompt="x")
    assert t.enable_hr is False and t.hr_scale == 2.0 and t.hr_upscaler == "Latent"
    assert t.denoising_strength == 0.7 and t.hr_sampler_name is None and t.hr_prompt == ""
    names = Txt2ImgRequest.field_names()
    assert names[: len(GenerationRequest.field_names())] == GenerationRequest.field_names()
    assert "enable_hr" in names and "init_images" not in names
    assert "init_images" in Img2ImgRequest.field_names() and "mask_blur" in Img2ImgRequest.field_names()
    t.validate()


def test_mask_blur_sets_both_and_replace_behaves() -> None:
    r = _req(mask_blur=9)
    assert (r.mask_blur_x, r.mask_blur_y, r.mask_blur) == (9, 9, None)
    r2 = dataclasses.replace(r, mask_blur_x=2)
    assert (r2.mask_blur_x, r2.mask_blur_y) == (2, 9)
    with pytest.raises(RequestError) as info:
        _req(mask_blur=-1)
    assert info.value.field == "mask_blur"


def test_lists_become_tuples_and_images_do_not_break_equality_or_hashing() -> None:
    r = _req(init_images=[_img()], outpaint_directions=["left"])
    assert isinstance(r.init_images, tuple) and r.outpaint_directions == ("left",)
    other = _req(init_images=(_img(8, 8),))
    assert r != _req(outpaint_directions=("up",))
    assert _req() == other  # images are not compared (they are not hashable either)
    assert hash(_req()) == hash(other)


def test_effective_batch_size() -> None:
    assert _req(batch_size=3).effective_batch_size == 3
    assert _req(batch_size=4, init_images=(_img(), _img())).effective_batch_size == 2


def _field_of(r: Img2ImgRequest) -> str:
    with pytest.raises(RequestError) as info:
        r.validate()
    return info.value.field


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(init_images=()), "init_images"),
        (dict(init_images=(_img(), _img())), "init_images"),  # more images than batch_size 1
        (dict(init_images=("not an image",)), "init_images[0]"),
        (dict(init_images=(_img(), b"png"), batch_size=2), "init_images[1]"),
        (dict(mask="mask.png"), "mask"),
        (dict(mask=Image.new("L", (64, 32))), "mask"),  # other aspect ratio
        (dict(resize_mode=4), "resize_mode"),
        (dict(resize_mode=True), "resize_mode"),
        (dict(denoising_strength=5), "denoising_strength"),
        (dict(denoising_strength=float("nan")), "denoising_strength"),
        (dict(image_cfg_scale=-1.0), "image_cfg_scale"),
        (dict(mask_blur_x=-1), "mask_blur_x"),
        (dict(mask_blur_y=1000), "mask_blur_y"),
        (dict(mask_round="yes"), "mask_round"),
        (dict(inpainting_fill=4), "inpainting_fill"),
        (dict(inpaint_full_res=1), "inpaint_full_res"),
        (dict(inpaint_full_res_padding=-4), "inpaint_full_res_padding"),
        (dict(inpainting_mask_invert=2), "inpainting_mask_invert"),
        (dict(initial_noise_multiplier=3.0), "initial_noise_multiplier"),
        (dict(outpaint_pixels=-8), "outpaint_pixels"),
        (dict(outpaint_pixels=8, outpaint_directions=()), "outpaint_directions"),
        (dict(outpaint_directions=("north",)), "outpaint_directions"),
        (dict(outpaint_fill="magic"), "outpaint_fill"),
        (dict(outpaint_noise=2.0), "outpaint_noise"),
        (dict(outpaint_pixels=4090), "outpaint_pixels"),  # canvas over 4096 a side
        (dict(outpaint_pixels=8, outpaint_directions=("up",), init_images=(_img(16, 16),)), "init_images"),
        (dict(steps=0), "steps"),  # the shared fields are still checked
        (dict(sampler_name="nope"), "sampler_name"),
    ],
)
def test_bad_fields_name_themselves(kw: dict[str, object], field: str) -> None:
    assert _field_of(_req(**kw)) == field


def test_good_variants_pass() -> None:
    _req(mask=Image.new("L", (64, 64)), inpaint_full_res=True, inpainting_fill=0).validate()
    _req(mask=Image.new("L", (128, 128))).validate()  # same aspect ratio: resized later
    _req(init_images=(_img(), _img()), batch_size=2, resize_mode=3).validate()
    _req(outpaint_pixels=64, outpaint_directions=("left", "down"), outpaint_fill="average").validate()
    _req(init_images=(_img(600, 400),), width=512, height=512, image_cfg_scale=1.5).validate()


def test_an_image_over_the_pixel_limit_is_refused() -> None:
    huge = Image.new("1", (10_000, 5_000))  # 50M pixels in 6 MB (1 bit each)
    r = _req(init_images=(huge,))
    with pytest.raises(RequestError) as info:
        r.validate()
    assert info.value.field == "init_images[0]" and "pixels" in info.value.message


def test_img2img_infotext_keys_round_trip() -> None:
    from webui.core.outputs.infotext import format_infotext, parse_infotext
    from webui.core.tasks.inpaint import infotext_params
    from webui.core.tasks.input_images import init_image_hash

    img = _img()
    r = _req(
        mask=Image.new("L", (64, 64), 255),
        inpainting_mask_invert=1,
        inpainting_fill=2,
        initial_noise_multiplier=0.9,
        inpaint_full_res=True,
        inpaint_full_res_padding=16,
    )
    params = {"Steps": 20, "Seed": 1, **infotext_params(r, img, only_masked_used=True)}
    got = parse_infotext(format_infotext("a cat", "", params))
    assert got["Denoising strength"] == "0.75" and got["Init image hash"] == init_image_hash(img)
    assert got["Mask blur"] == "4" and got["Mask mode"] == "Inpaint not masked"
    assert got["Masked content"] == "latent noise" and got["Noise multiplier"] == "0.9"
    assert got["Inpaint area"] == "Only masked" and got["Masked area padding"] == "16"
    plain = infotext_params(_req(), img, only_masked_used=False)
    assert {k for k, v in plain.items() if v is not None} == {"Denoising strength", "Init image hash"}
    out = infotext_params(
        _req(outpaint_pixels=32, outpaint_directions=("left", "up")), img, only_masked_used=False
    )
    assert out["Outpaint pixels"] == 32 and out["Outpaint directions"] == "left up" and out["Mask blur"] == 4
    assert out["Masked content"] is None  # "original", A1111's default, is not written
