"""Parity for img2img and inpainting on the flow-matching families: `run_flow_img2img` computes what
diffusers' StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline and their inpaint pipelines compute.

As in test_flow_parity.py: the same modules (tiny SD3.5 / Flux dev / Flux schnell), a fresh scheduler
from `make_flow_scheduler` each, our prompt embeddings, the same init latents (given to the pipelines
as latents, so the comparison starts after the VAE encode: ours takes the distribution's mode, theirs
samples it), the same noise (their generator draws it in the same shape), the same sigmas. Strengths
are chosen so that steps x strength is whole: there our start index and the pipelines'
int(steps - steps * strength) agree (see tasks/flow_img2img.py). Stochastic samplers draw their step
noise from the global RNG in the pipelines: both sides run them with the global RNG seeded the same.

Asserted: final latents within 1e-3, decoded pixels within 1/255.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core import families
from webui.core.families.flow_calls import pack, unpack
from webui.core.models.components import Components, Precision
from webui.core.models.flow_components import load_flow_components
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder
from webui.core.prompts.encode import Conditioning
from webui.core.sampling.flow_samplers import FLOW_SAMPLERS, FlowSampler, make_flow_scheduler
from webui.core.sampling.loop import HookPoint, StepState
from webui.core.sampling.samplers import set_timesteps
from webui.core.tasks.flow_img2img import run_flow_img2img
from webui.core.tasks.images import decode, encode_init
from webui.core.tasks.txt2img import run_txt2img

ARCHES = ("sd3.5", "flux-dev", "flux-schnell")
STEPS = 4
W, H = 64, 48
STOCHASTIC = {"Euler a", "LCM", "DPM++ 2M SDE", "DPM++ 3M SDE"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Components]:
    root = tmp_path_factory.mktemp("flow-img2img-parity")
    out = {}
    for arch in ARCHES:
        model = build_tiny_flow(arch, seed=5)
        layout = "comfy" if model.is_flux else "stability"
        out[arch] = load_flow_components(
            save(single_file(model, layout), root / f"{arch}.safetensors"), Precision()
        )
    return out


def _encode(parts: Components, text: str) -> Conditioning:
    return PromptEncoder(parts, ("parity", id(parts)), EncodingCache()).encode(text)[0]


def _init_latents(parts: Components) -> torch.Tensor:
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return encode_init(parts, [picture])


def _latent_mask() -> torch.Tensor:
    """(1, 1, h, w): repaint the left half and a band at the top (whole 2x2 patches and partial ones)."""
    m = torch.zeros(1, 1, H // 8, W // 8)
    m[..., :, : W // 16] = 1
    m[..., :1, :] = 1
    return m


def _pixel_mask(latent: torch.Tensor) -> Image.Image:
    big = latent[0, 0].repeat_interleave(8, 0).repeat_interleave(8, 1)
    return Image.fromarray((big.numpy() * 255).astype(np.uint8), "L")


def _pipeline(parts: Components, scheduler: Any, inpaint: bool) -> Any:
    import diffusers

    flux = families.of(parts).pipeline_class == "FluxPipeline"
    name = ("Flux" if flux else "StableDiffusion3") + ("InpaintPipeline" if inpaint else "Img2ImgPipeline")
    cls = getattr(diffusers, name)
    if flux:
        return cls(
            scheduler,
            parts.vae,
            parts.text_encoder,
            parts.tokenizer,
            parts.text_encoder_3,
            parts.tokenizer_3,
            parts.transformer,
        )
    return cls(
        parts.transformer,
        scheduler,
        parts.vae,
        parts.text_encoder,
        parts.tokenizer,
        parts.text_encoder_2,
        parts.tokenizer_2,
        parts.text_encoder_3,
        parts.tokenizer_3,
    )


def _compare(parts: Components, sampler: str, strength: float, mask: torch.Tensor | None) -> None:
    fam = families.of(parts)
    flux = fam.pipeline_class == "FluxPipeline"
    cfg = 1.0 if flux else 5.0
    cond, uncond = _encode(parts, "a red fox"), _encode(parts, "blurry")
    init = _init_latents(parts)
    noise = torch.randn(init.shape, generator=torch.Generator().manual_seed(9))
    seq = (H // 16) * (W // 16)
    stochastic = sampler in STOCHASTIC

    ours_sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS)
    torch.manual_seed(123)
    ours = run_flow_img2img(
        parts,
        ours_sched.scheduler,
        init,
        noise,
        None if stochastic else [torch.Generator().manual_seed(9)],  # type: ignore[arg-type]
        cond,
        uncond,
        steps=STEPS,
        strength=strength,
        cfg_scale=cfg,
        width=W,
        height=H,
        timestep_kwargs=ours_sched.timestep_kwargs,
        distilled_cfg_scale=3.5,
        mask_latent=mask,
    )

    theirs_sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS).scheduler
    pipe = _pipeline(parts, theirs_sched, inpaint=mask is not None)
    kw: dict[str, Any] = dict(
        image=init,
        strength=strength,
        prompt_embeds=cond.embeds,
        pooled_prompt_embeds=cond.pooled,
        num_inference_steps=STEPS,
        height=H,
        width=W,
        generator=torch.Generator().manual_seed(9),
        output_type="latent",
    )
    if mask is not None:
        kw.update(mask_image=_pixel_mask(mask), masked_image_latents=init)
    if flux:
        kw["guidance_scale"] = 3.5
        if not parts.scheduler_config.get("use_dynamic_shifting"):
            kw["sigmas"] = ours_sched.scheduler.sigmas[:-1].tolist()
    else:
        kw.update(
            guidance_scale=cfg,
            negative_prompt_embeds=uncond.embeds,
            negative_pooled_prompt_embeds=uncond.pooled,
        )
    torch.manual_seed(123)
    with torch.no_grad():
        theirs = pipe(**kw).images
    if flux:
        theirs = unpack(theirs, init.shape[2], init.shape[3])
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-3
    assert np.abs(_to_uint8(decode(parts.vae, ours)) - _to_uint8(decode(parts.vae, theirs))).max() <= 1
    assert (ours - init).abs().max().item() > 1e-2  # something was denoised


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.int16)


def _pipeline_runs(sampler: FlowSampler) -> bool:
    """The img2img pipelines start with the scheduler's `scale_noise`: only the FlowMatch ones have it."""
    import diffusers

    return hasattr(getattr(diffusers, sampler.scheduler_class), "scale_noise")


@pytest.mark.parametrize("sampler", [s.name for s in FLOW_SAMPLERS if _pipeline_runs(s)])
def test_sd3_img2img_matches_the_pipeline(sampler: str, loaded: dict[str, Components]) -> None:
    _compare(loaded["sd3.5"], sampler, 0.75, None)


@pytest.mark.parametrize("sampler", [s.name for s in FLOW_SAMPLERS if not _pipeline_runs(s)])
def test_multistep_samplers_start_where_their_scheduler_puts_the_init(
    sampler: str, loaded: dict[str, Components]
) -> None:
    """The pipelines cannot run these; their schedulers' own `add_noise` (flow sigmas) gives the start
    point, and strength 1 is txt2img from the same noise (which test_flow_parity compares)."""
    parts = loaded["sd3.5"]
    cond, uncond = _encode(parts, "a red fox"), _encode(parts, "blurry")
    init = _init_latents(parts)
    noise = torch.randn(init.shape, generator=torch.Generator().manual_seed(9))
    seq = (H // 16) * (W // 16)

    def run(strength: float, hooks: tuple[Any, ...] = ()) -> torch.Tensor:
        sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS)
        torch.manual_seed(1)
        return run_flow_img2img(
            parts, sched.scheduler, init, noise, None, cond, uncond, steps=STEPS, strength=strength,  # type: ignore[arg-type]
            cfg_scale=5.0, width=W, height=H, timestep_kwargs=sched.timestep_kwargs, hooks=hooks,
        )  # fmt: skip

    starts: list[torch.Tensor] = []

    def first(point: HookPoint, state: StepState) -> None:
        if point is HookPoint.BEFORE_STEP and state.step == 0:
            starts.append(state.latents.clone())

    run(0.5, (first,))
    ref = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS).scheduler
    set_timesteps(ref, STEPS, begin_index=2)
    expected = ref.add_noise(init, noise, ref.timesteps[2:3])
    assert torch.allclose(starts[0], expected, atol=1e-6)
    sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS)
    torch.manual_seed(1)
    txt = run_txt2img(
        parts, sched.scheduler, noise, None, cond, uncond, steps=STEPS, cfg_scale=5.0, width=W, height=H,  # type: ignore[arg-type]
        timestep_kwargs=sched.timestep_kwargs,
    )  # fmt: skip
    assert torch.equal(run(1.0), txt)


@pytest.mark.parametrize("arch", ["flux-dev", "flux-schnell"])
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_flux_img2img_matches_the_pipeline(arch: str, strength: float, loaded: dict[str, Components]) -> None:
    _compare(loaded[arch], "Euler", strength, None)


@pytest.mark.parametrize(
    ("arch", "sampler", "strength"),
    [
        ("sd3.5", "Euler", 0.75),
        ("sd3.5", "LCM", 1.0),
        ("sd3.5", "Heun", 0.5),
        ("flux-dev", "Euler", 0.75),
        ("flux-schnell", "Euler", 1.0),
    ],
)
def test_inpaint_blend_matches_the_pipeline(
    arch: str, sampler: str, strength: float, loaded: dict[str, Components]
) -> None:
    _compare(loaded[arch], sampler, strength, _latent_mask())


def test_pack_is_how_the_pipelines_keep_flux_latents() -> None:
    x = torch.randn(2, 16, H // 8, W // 8)
    assert torch.equal(unpack(pack(x), H // 8, W // 8), x)
