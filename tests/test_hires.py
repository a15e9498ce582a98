"""Hires fix: A1111's target sizes, the upscalers, validation, infotext round trip and a two-pass run."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core import families
from webui.core.family_requests import fit_request
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.outputs.infotext import format_infotext, parse_infotext
from webui.core.prompts.encode import encode_prompts
from webui.core.sampling.catalog import BUILTIN
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import make_scheduler
from webui.core.tasks import hires, img2img
from webui.core.tasks.images import decode, to_pil
from webui.core.tasks.txt2img import run_txt2img
from webui.core.types import RequestError, Txt2ImgRequest

pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


@pytest.mark.parametrize(
    ("base", "scale", "resize", "to", "truncate", "size"),
    [
        ((512, 512), 2.0, (0, 0), (1024, 1024), (0, 0), (1024, 1024)),
        ((512, 768), 1.5, (0, 0), (768, 1152), (0, 0), (768, 1152)),
        ((520, 512), 1.3, (0, 0), (676, 665), (0, 0), (672, 664)),  # int(), then latents floor to 8
        ((512, 768), 2.0, (1024, 0), (1024, 1536), (0, 0), (1024, 1536)),
        ((512, 768), 2.0, (0, 1024), (682, 1024), (0, 0), (680, 1024)),
        # both given: cover 1024x768 keeping 1:1, then crop 256 rows (32 latent rows) off, centred
        ((512, 512), 2.0, (1024, 768), (1024, 1024), (0, 32), (1024, 768)),
        ((512, 768), 2.0, (1024, 1024), (1024, 1536), (0, 64), (1024, 1024)),
        ((768, 512), 2.0, (1024, 1024), (1536, 1024), (64, 0), (1024, 1024)),
    ],
)
def test_targets(
    base: tuple[int, int],
    scale: float,
    resize: tuple[int, int],
    to: tuple[int, int],
    truncate: tuple[int, int],
    size: tuple[int, int],
) -> None:
    t = hires.hires_target(*base, scale, *resize)
    assert (t.upscale_to_x, t.upscale_to_y) == to
    assert (t.truncate_x, t.truncate_y) == truncate
    assert t.size == size
    assert t.latent_size == (size[1] // 8, size[0] // 8)


def test_truncate_is_centred_with_the_odd_row_after() -> None:
    z = torch.arange(10.0).view(1, 1, 10, 1).repeat(1, 1, 1, 4)
    t = hires.HiresTarget(32, 80, 0, 3)
    got = hires.truncate(z, t)
    assert got.shape == (1, 1, 7, 4)
    assert got[0, 0, :, 0].tolist() == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("mode", list(hires.LATENT_UPSCALE_MODES))
def test_latent_upscale_modes(mode: str) -> None:
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = hires.hires_target(64, 64, 2.0)
    up = hires.upscale_latents(z, mode, t)
    assert up.shape == (2, 4, 16, 16)
    if "nearest" in mode:
        assert torch.equal(up[..., ::2, ::2], z)
    else:
        assert not torch.equal(up[..., ::2, ::2], z)


def test_latent_modes_differ() -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = hires.hires_target(64, 64, 1.5)
    outs = {m: hires.upscale_latents(z, m, t) for m in ("Latent", "Latent (bicubic)", "Latent (nearest)")}
    assert not torch.equal(outs["Latent"], outs["Latent (bicubic)"])
    assert not torch.equal(outs["Latent"], outs["Latent (nearest)"])


def test_image_upscalers() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    t = hires.hires_target(16, 16, 2.0)
    nearest = np.asarray(hires.upscale_image(img, "Nearest", t))
    assert nearest.shape == (32, 32, 3) and np.array_equal(nearest[::2, ::2], np.asarray(img))
    lanczos = np.asarray(hires.upscale_image(img, "Lanczos", t))
    assert np.array_equal(lanczos, np.asarray(hires.upscale_image(img, "None", t)))
    assert not np.array_equal(lanczos, nearest)
    assert not hires.is_latent("Lanczos") and hires.is_latent("Latent (antialiased)")


# -- validation ------------------------------------------------------------------------------------------


def _hr(**kw: object) -> Txt2ImgRequest:
    args: dict[str, object] = dict(prompt="a cat", width=512, height=512, enable_hr=True)
    args.update(kw)
    return Txt2ImgRequest(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(hr_upscaler=""), "hr_upscaler"),
        (dict(hr_scale=0.5), "hr_scale"),
        (dict(hr_scale=float("nan")), "hr_scale"),
        (dict(hr_scale=8.0 + 1), "hr_scale"),
        (dict(hr_scale=8.0, width=520), "hr_scale"),  # 520 * 8 = 4160 > 4096
        (dict(hr_resize_x=32), "hr_resize_x"),
        (dict(hr_resize_y=-8), "hr_resize_y"),
        # covering 64x4096 from 2:1 means upscaling to 8192x4096
        (dict(hr_resize_x=64, hr_resize_y=4096, width=1024, height=512), "hr_resize_x"),
        (dict(hr_second_pass_steps=-1), "hr_second_pass_steps"),
        (dict(denoising_strength=1.5), "denoising_strength"),
        (dict(hr_sampler_name="Eulerish"), "hr_sampler_name"),
        (dict(hr_sampler_name="DDIM", hr_scheduler="Karras"), "hr_scheduler"),  # no family runs it
        (dict(hr_prompt=3), "hr_prompt"),
        (dict(enable_hr="yes"), "enable_hr"),
    ],
)
def test_bad_hires_fields(kw: dict[str, object], field: str) -> None:
    with pytest.raises(RequestError) as info:
        _hr(**kw).validate()
    assert info.value.field == field


def test_the_second_pass_sampler_must_run_on_the_models_family() -> None:
    """DPM fast is a diffusion sampler only: valid until the model is known, then refused for a
    flow-matching model (and taken by an SD one)."""
    request = _hr(hr_sampler_name="DPM fast")
    request.validate()
    with pytest.raises(RequestError) as info:
        fit_request(request, families.family("flux-dev"), BUILTIN)
    assert info.value.field == "hr_sampler_name"
    fit_request(request, families.family("sd1"), BUILTIN)


def test_good_hires_requests_pass() -> None:
    _hr(hr_scale=8.0).validate()  # 4096 a side: the limit
    _hr(hr_resize_x=4096, hr_resize_y=64, width=1024, height=512).validate()  # covers 4096x2048, crops
    _hr(hr_sampler_name="DPM++ 2M", hr_scheduler="Karras", hr_upscaler="Latent (nearest-exact)").validate()


def test_hires_fields_are_not_checked_when_off() -> None:
    Txt2ImgRequest(prompt="x", hr_upscaler="nope", hr_scale=100.0).validate()


def test_second_pass_sampler_and_steps() -> None:
    r = _hr(sampler_name="DPM++ 2M", scheduler="Karras", steps=20)
    assert hires.second_pass_sampler(r) == ("DPM++ 2M", "Karras") and hires.second_pass_steps(r) == 20
    r = _hr(sampler_name="DPM++ 2M", scheduler="Karras", hr_sampler_name="Euler a", hr_second_pass_steps=7)
    # the first pass's schedule type carries over (A1111's "Use same scheduler"): Euler a takes Karras
    assert hires.second_pass_sampler(r) == ("Euler a", "Karras") and hires.second_pass_steps(r) == 7
    r = _hr(hr_sampler_name="Euler", hr_scheduler="Karras")
    assert hires.second_pass_sampler(r) == ("Euler", "Karras")


# -- infotext ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(hr_scale=1.5, denoising_strength=0.45),
        dict(hr_resize_x=1024, hr_resize_y=768, hr_upscaler="Lanczos", hr_second_pass_steps=12),
        dict(hr_resize_x=768, hr_upscaler="Latent (bicubic antialiased)"),
        dict(
            hr_sampler_name="Euler a",
            hr_scheduler="SGM Uniform",
            hr_prompt="a cat, detailed, sharp: 8k",
            hr_negative_prompt='blurry, "bad"',
        ),
    ],
)
def test_infotext_pasted_back_reproduces_the_request(kw: dict[str, object]) -> None:
    request = _hr(negative_prompt="ugly", sampler_name="DPM++ 2M", scheduler="Karras", **kw)
    request.validate()
    params = {"Steps": 20, "Sampler": "DPM++ 2M", "Seed": 1, **hires.infotext_params(request)}
    parsed = parse_infotext(format_infotext(request.prompt, request.negative_prompt, params))
    fields = hires.fields_from_infotext(parsed)
    base = Txt2ImgRequest(prompt="a cat", negative_prompt="ugly", sampler_name="DPM++ 2M", scheduler="Karras")
    assert dataclasses.replace(base, **fields) == request  # type: ignore[arg-type]


def test_infotext_keys() -> None:
    assert hires.infotext_params(Txt2ImgRequest(prompt="x")) == {}
    p = hires.infotext_params(_hr(hr_scale=2.0, prompt="x", hr_prompt="x"))
    assert p["Hires upscale"] == 2.0 and p["Hires upscaler"] == "Latent" and p["Denoising strength"] == 0.7
    assert p["Hires resize"] is None and p["Hires prompt"] is None and p["Hires steps"] is None
    assert hires.infotext_params(_hr(hr_resize_x=640))["Hires resize"] == "640x0"
    assert hires.fields_from_infotext({"Steps": "20"}) == {}


# -- a two-pass run on the tiny model --------------------------------------------------------------------


@pytest.fixture
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_one_thread")
@pytest.mark.parametrize(("upscaler", "resize"), [("Latent", (0, 0)), ("Lanczos", (128, 96))])
def test_two_passes_make_the_target_size(
    tiny_files: dict[str, Path], upscaler: str, resize: tuple[int, int]
) -> None:
    parts = load_model(tiny_files["sd1"], Precision())
    request = _hr(
        width=64, height=64, hr_upscaler=upscaler, hr_resize_x=resize[0], hr_resize_y=resize[1], steps=3
    )
    request.validate()
    cond, uncond = encode_prompts(parts, ["a cat"]), encode_prompts(parts, [""])
    seeds = [5]
    shape = (4, 8, 8)
    sched = make_scheduler("Euler", None, parts.scheduler_config)
    gens = NoiseSource.for_seeds(shape, seeds).generator_list()
    first = run_txt2img(parts, sched, initial_noise(shape, seeds, seeds, 0.0, (-1, -1)), gens, cond, uncond,
                        steps=3, cfg_scale=7.0, width=64, height=64)  # fmt: skip
    target = hires.request_target(request)
    if hires.is_latent(upscaler):
        latents = hires.upscale_latents(first, upscaler, target)
    else:
        big = hires.upscale_image(to_pil(decode(parts.vae, first))[0], upscaler, target)
        latents = hires.truncate(img2img.encode_init(parts, [big]), target)
    w, h = target.size
    hr_shape = (4, h // 8, w // 8)
    assert tuple(latents.shape[1:]) == hr_shape
    sampler, schedule = hires.second_pass_sampler(request)
    hr_sched = make_scheduler(sampler, schedule, parts.scheduler_config)
    out = img2img.run_img2img(
        parts, hr_sched, latents, initial_noise(hr_shape, seeds, seeds, 0.0, (-1, -1)),
        NoiseSource.for_seeds(hr_shape, seeds).generator_list(), cond, uncond,
        steps=hires.second_pass_steps(request), strength=request.denoising_strength, cfg_scale=7.0,
        width=w, height=h,
    )  # fmt: skip
    image = to_pil(decode(parts.vae, out))[0]
    assert image.size == ((128, 128) if resize == (0, 0) else (128, 96))
