"""Parity for the flow-matching families: our loop (`run_txt2img` with the family's denoiser call and
guidance) computes what diffusers' `StableDiffusion3Pipeline` and `FluxPipeline` compute.

Both sides get the same modules (tiny SD3.5 / Flux dev / Flux schnell loaded by our loader), a fresh
scheduler from `make_flow_scheduler` each, our prompt embeddings (so only the loops are compared;
`test_our_prompt_encoding_is_the_pipelines` compares the encodings), the same initial noise (packed
2x2 for Flux, as its pipeline keeps latents) and the same sigmas: for Flux the pipeline's own
`linspace(1, 1/n)` with the dynamic shift (dev); for schnell our sigmas passed to it. The stochastic
samplers draw their step noise from the global RNG in the pipelines (they pass no generator to
`step`): both sides run them with the global RNG seeded the same and no generators.

Asserted: final latents within 1e-3, decoded pixels within 1/255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core import families
from webui.core.families.flow_calls import pack, unpack
from webui.core.models.components import Components, Precision
from webui.core.models.flow_components import load_flow_components
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder
from webui.core.prompts.encode import Conditioning
from webui.core.sampling.flow_samplers import FLOW_SAMPLERS, make_flow_scheduler
from webui.core.tasks.images import decode
from webui.core.tasks.txt2img import run_txt2img

ARCHES = ("sd3.5", "flux-dev", "flux-schnell")
STEPS = 4
W, H = 64, 48
# The pipelines' step noise comes from the global RNG; ours from per-image generators unless none given
STOCHASTIC = {"Euler a", "LCM", "DPM++ 2M SDE", "DPM++ 3M SDE"}
# FluxPipeline passes `sigmas` to set_timesteps, which only Euler's, Euler a's and LCM's schedulers take
# (it cannot run the others). Euler a and LCM draw step noise in the shape they step: the pipeline steps
# packed (B, tokens, 64) latents, we step (B, 16, h, w), so the same random numbers land on other cells
# (same distribution, other pictures). Flux compares Euler; SD3.5 compares every sampler.
FLUX_PIPELINE_RUNS = {"Euler"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Components]:
    root = tmp_path_factory.mktemp("flow-parity")
    out = {}
    for arch in ARCHES:
        model = build_tiny_flow(arch, seed=5)
        layout = "comfy" if model.is_flux else "stability"
        path = save(single_file(model, layout), root / f"{arch}.safetensors")
        out[arch] = load_flow_components(path, Precision())
    return out


def _encode(parts: Components, text: str) -> Conditioning:
    return PromptEncoder(parts, ("parity", id(parts)), EncodingCache()).encode(text)[0]


def _pipeline(parts: Components, scheduler: Any) -> Any:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if families.of(parts).pipeline_class == "FluxPipeline":
        return FluxPipeline(
            scheduler,
            parts.vae,
            parts.text_encoder,
            parts.tokenizer,
            parts.text_encoder_3,
            parts.tokenizer_3,
            parts.transformer,
        )
    return StableDiffusion3Pipeline(
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


def _cases() -> list[tuple[str, str]]:
    return [
        (arch, s.name)
        for arch in ARCHES
        for s in FLOW_SAMPLERS
        if not arch.startswith("flux") or s.name in FLUX_PIPELINE_RUNS
    ]


@pytest.mark.parametrize(("arch", "sampler"), _cases())
def test_loop_matches_pipeline(arch: str, sampler: str, loaded: dict[str, Components]) -> None:
    parts = loaded[arch]
    fam = families.of(parts)
    flux = fam.pipeline_class == "FluxPipeline"
    cfg = 1.0 if flux else 5.0
    cond, uncond = _encode(parts, "a red fox"), _encode(parts, "blurry")
    noise = torch.randn((1, *fam.latent.shape(W, H)), generator=torch.Generator().manual_seed(9))
    seq = (H // 16) * (W // 16)
    stochastic = sampler in STOCHASTIC

    ours_sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS)
    torch.manual_seed(123)
    ours = run_txt2img(
        parts,
        ours_sched.scheduler,
        noise,
        None if stochastic else [torch.Generator().manual_seed(9)],  # type: ignore[arg-type]
        cond,
        uncond,
        steps=STEPS,
        cfg_scale=cfg,
        width=W,
        height=H,
        timestep_kwargs=ours_sched.timestep_kwargs,
        distilled_cfg_scale=3.5,
    )

    theirs_sched = make_flow_scheduler(sampler, "Simple", parts.scheduler_config, seq, STEPS).scheduler
    pipe = _pipeline(parts, theirs_sched)
    kw: dict[str, Any] = dict(
        prompt_embeds=cond.embeds,
        pooled_prompt_embeds=cond.pooled,
        num_inference_steps=STEPS,
        height=H,
        width=W,
        output_type="latent",
    )
    if flux:
        kw["latents"] = pack(noise)
        kw["guidance_scale"] = 3.5
        if not parts.scheduler_config.get("use_dynamic_shifting"):
            kw["sigmas"] = ours_sched.scheduler.sigmas[:-1].tolist()
    else:
        kw.update(
            latents=noise,
            guidance_scale=cfg,
            negative_prompt_embeds=uncond.embeds,
            negative_pooled_prompt_embeds=uncond.pooled,
        )
    torch.manual_seed(123)
    with torch.no_grad():
        theirs = pipe(**kw).images
    if flux:
        theirs = unpack(theirs, noise.shape[2], noise.shape[3])
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-3
    ours_px = _to_uint8(decode(parts.vae, ours))
    theirs_px = _to_uint8(decode(parts.vae, theirs))
    assert np.abs(ours_px - theirs_px).max() <= 1


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.int16)


@pytest.mark.parametrize("arch", ARCHES)
def test_our_prompt_encoding_is_the_pipelines(arch: str, loaded: dict[str, Components]) -> None:
    parts = loaded[arch]
    fam = families.of(parts)
    pipe = _pipeline(parts, make_flow_scheduler("Euler", "Simple", parts.scheduler_config, 12, 2).scheduler)
    ours = _encode(parts, "a red fox, watercolor")
    length = fam.text.t5_length
    with torch.no_grad():
        if fam.pipeline_class == "FluxPipeline":
            embeds, pooled, _ = pipe.encode_prompt("a red fox, watercolor", None, max_sequence_length=length)
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(
                "a red fox, watercolor",
                None,
                None,
                do_classifier_free_guidance=False,
                max_sequence_length=length,
            )
    assert ours.embeds.shape == embeds.shape and ours.pooled is not None
    assert torch.allclose(ours.embeds, embeds, atol=1e-5)
    assert torch.allclose(ours.pooled, pooled, atol=1e-5)


def test_every_flow_sampler_is_compared_on_sd3() -> None:
    assert {s for a, s in _cases() if a == "sd3.5"} == {s.name for s in FLOW_SAMPLERS}
    assert Path(__file__).name == "test_flow_parity.py"
