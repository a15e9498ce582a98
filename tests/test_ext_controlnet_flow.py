"""SD3 and Flux ControlNets through the core's txt2img loop: parity with diffusers'
StableDiffusion3ControlNetPipeline and FluxControlNetPipeline for one unit (InstantX SD3, an
SD3ControlNetModel with SD3.5's q/k norms on SD3.5 Medium, InstantX Flux, XLabs Flux: ours loaded from
XLabs' layout, the pipeline's the diffusers model it was written from), and what a unit does (changes
the picture, zero weight changes nothing, start/end, two units add up, a batch is per-image runs).

Both sides get the same tiny model (tiny SD3 Medium / SD3.5 / Flux dev, loaded by our loader), the same tiny
ControlNet (loaded by the extension from its InstantX-layout file), the same control image (the pipeline
gets it in [-1, 1] as a tensor, so the preprocessing and resizing, shared with SD1 units, are not part of
the comparison), embeddings, noise and sigmas, as in tests/test_flow_parity.py. The VAE's posterior is
made (near) deterministic (tests/fixtures_flow_controlnet.py): the pipelines sample the control latents
from it, we take its mean.

Asserted: final latents within 1e-3, decoded pixels within 1/255.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.fixtures_controlnet import extension_modules
from tests.fixtures_flow_controlnet import (
    XLABS_SEED,
    build_flow_controlnet,
    sharpen_posterior,
    write_flow_controlnets,
)
from webui.core import families
from webui.core.families.flow_calls import pack, unpack
from webui.core.models.components import Components, Precision
from webui.core.models.flow_components import load_flow_components
from webui.core.models.tiny_flow import build_tiny_flow, save, single_file
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder
from webui.core.prompts.encode import Conditioning
from webui.core.sampling.flow_samplers import make_flow_scheduler
from webui.core.tasks.images import decode
from webui.core.tasks.txt2img import run_txt2img

ARCHES = ("sd3", "flux-dev")
CHECKPOINTS = (*ARCHES, "sd3.5")
STEPS = 4
W, H = 64, 48
GUIDANCE = 3.5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    ns = extension_modules(tmp_path_factory.mktemp("flow-cn-ext"))
    ns.flow_units = importlib.import_module(ns.models.__package__ + ".flow_units")
    return ns


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Components]:
    root = tmp_path_factory.mktemp("flow-cn-models")
    out = {}
    for arch in CHECKPOINTS:
        model = build_tiny_flow(arch, seed=5)
        sharpen_posterior(model.vae)
        layout = "comfy" if model.is_flux else "stability"
        out[arch] = load_flow_components(
            save(single_file(model, layout), root / f"{arch}.safetensors"), Precision()
        )
    return out


@pytest.fixture(scope="module")
def cn_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return write_flow_controlnets(tmp_path_factory.mktemp("flow-cn") / "ControlNet")


KINDS = {
    "sd3": "sd3",
    "sd3.5": "sd3.5",
    "flux-dev": "flux-dev",
    "flux-xlabs": "flux-dev",
    "flux-union": "flux-dev",
}


@pytest.fixture(scope="module")
def controlnets(cn: SimpleNamespace, loaded: dict, cn_files: dict) -> dict[str, Any]:
    return {
        kind: cn.models.load_control_model(cn_files[kind, "file"], dict(loaded[arch].transformer.config))
        for kind, arch in KINDS.items()
    }


def control_image() -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: a drawing."""
    image = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(image)
    d.rectangle((6, 6, 40, 40), outline="black", width=3)
    d.ellipse((30, 4, 60, 34), fill=(200, 30, 30))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _encode(parts: Components, text: str) -> Conditioning:
    return PromptEncoder(parts, ("flow-cn", id(parts)), EncodingCache()).encode(text)[0]


def _noise(parts: Components, seed: int = 9) -> torch.Tensor:
    return torch.randn(
        (1, *families.of(parts).latent.shape(W, H)), generator=torch.Generator().manual_seed(seed)
    )


def _cfg(parts: Components) -> float:
    return 1.0 if parts.arch.startswith("flux") else 5.0


def hook(
    cn: SimpleNamespace, parts: Components, model: Any, image: torch.Tensor | None = None, **unit: Any
) -> Any:
    """The extension's hook for units of `model` ({index, weight, guidance_start, ...} each)."""
    units = unit.pop("units", None) or [unit]
    image = control_image() if image is None else image
    active, latents = [], []
    for i, u in enumerate(units):
        cu = cn.units.ControlUnit(index=i, module="none", model="tiny", **u)
        a = cn.residuals.ActiveUnit(cu, model, image, Image.new("RGB", (W, H)))
        active.append(a)
        latents.append(cn.flow_units.control_input(parts.vae, image, a.model))
    return cn.flow_units.FlowControlHook(active, latents)


def ours(
    parts: Components, hooks: Sequence[Any] = (), steps: int = STEPS, seeds: Sequence[int] = (9,)
) -> torch.Tensor:
    seq = (H // 16) * (W // 16)
    sched = make_flow_scheduler("Euler", "Simple", parts.scheduler_config, seq, steps)
    noise = torch.cat([_noise(parts, s) for s in seeds])
    n = len(seeds)
    return run_txt2img(
        parts, sched.scheduler, noise, [torch.Generator().manual_seed(s) for s in seeds],
        _encode(parts, "a red fox").repeat(n), _encode(parts, "blurry").repeat(n), steps=steps,
        cfg_scale=_cfg(parts), width=W, height=H, timestep_kwargs=sched.timestep_kwargs,
        distilled_cfg_scale=GUIDANCE, model_hooks=list(hooks),
    )  # fmt: skip


def theirs(
    parts: Components, controlnet: Any, weight: float, control_mode: int | None = None
) -> torch.Tensor:
    from diffusers import FluxControlNetPipeline, StableDiffusion3ControlNetPipeline

    seq = (H // 16) * (W // 16)
    ours_sched = make_flow_scheduler("Euler", "Simple", parts.scheduler_config, seq, STEPS)
    scheduler = make_flow_scheduler("Euler", "Simple", parts.scheduler_config, seq, STEPS).scheduler
    cond, uncond, noise = _encode(parts, "a red fox"), _encode(parts, "blurry"), _noise(parts)
    kw: dict[str, Any] = dict(
        prompt_embeds=cond.embeds, pooled_prompt_embeds=cond.pooled, num_inference_steps=STEPS, height=H,
        width=W, output_type="latent", control_image=control_image() * 2 - 1,
        controlnet_conditioning_scale=weight,
    )  # fmt: skip
    flux = parts.arch.startswith("flux")
    if flux:
        pipe: Any = FluxControlNetPipeline(
            scheduler, parts.vae, parts.text_encoder, parts.tokenizer, parts.text_encoder_3,
            parts.tokenizer_3, parts.transformer, controlnet,
        )  # fmt: skip
        kw.update(latents=pack(noise), guidance_scale=GUIDANCE, control_mode=control_mode)
        if not parts.scheduler_config.get("use_dynamic_shifting"):
            kw["sigmas"] = ours_sched.scheduler.sigmas[:-1].tolist()
    else:
        pipe = StableDiffusion3ControlNetPipeline(
            parts.transformer, scheduler, parts.vae, parts.text_encoder, parts.tokenizer,
            parts.text_encoder_2, parts.tokenizer_2, parts.text_encoder_3, parts.tokenizer_3, controlnet,
        )  # fmt: skip
        kw.update(
            latents=noise, guidance_scale=_cfg(parts), negative_prompt_embeds=uncond.embeds,
            negative_pooled_prompt_embeds=uncond.pooled,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(**kw).images
    return unpack(out, noise.shape[2], noise.shape[3]) if flux else out


def _pixels(parts: Components, latents: torch.Tensor) -> np.ndarray:
    x = (decode(parts.vae, latents).float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.int16)


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_unit_matches_the_diffusers_controlnet_pipeline(
    kind: str, cn: SimpleNamespace, loaded: dict, controlnets: dict
) -> None:
    parts, model = loaded[KINDS[kind]], controlnets[kind]
    original = build_flow_controlnet("flux-xlabs", XLABS_SEED) if kind == "flux-xlabs" else model
    union = {"union_control_type": "depth"} if kind == "flux-union" else {}
    ref = theirs(parts, original, 0.8, control_mode=2 if union else None)  # depth: mode 2
    got = ours(parts, [hook(cn, parts, model, weight=0.8, **union)])
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-3
    assert np.abs(_pixels(parts, got) - _pixels(parts, ref)).max() <= 1
    plain = ours(parts)
    assert np.abs(_pixels(parts, got) - _pixels(parts, plain)).max() > 20  # the unit shows
    if union:  # another control type is another picture
        tile = ours(parts, [hook(cn, parts, model, weight=0.8, union_control_type="tile")])
        assert (got - tile).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ARCHES)
def test_zero_weight_start_end_and_two_units(
    arch: str, cn: SimpleNamespace, loaded: dict, controlnets: dict
) -> None:
    parts, model = loaded[arch], controlnets[arch]
    plain = ours(parts)
    assert torch.equal(ours(parts, [hook(cn, parts, model, weight=0.0)]), plain)
    full = ours(parts, [hook(cn, parts, model, weight=1.0)])
    late = ours(parts, [hook(cn, parts, model, weight=1.0, guidance_start=0.5)])
    early = ours(parts, [hook(cn, parts, model, weight=1.0, guidance_end=0.25)])
    for a, b in ((late, full), (late, plain), (early, full), (early, plain), (early, late)):
        assert not torch.allclose(a, b, atol=1e-4)
    # a unit that acts after the last step is no unit
    assert torch.equal(
        ours(parts, [hook(cn, parts, model, weight=1.0, guidance_start=1.0)], steps=3), ours(parts, steps=3)
    )
    # two units of weight 0.5 each: the outputs add up to one unit of weight 1 (same model, same image)
    two = ours(parts, [hook(cn, parts, model, units=[{"weight": 0.5}, {"weight": 0.5}])])
    assert (two - full).abs().max().item() <= 1e-4
    # a batch: image i is the single run with its seed (the ControlNet runs per image, as the loop does)
    batch = ours(parts, [hook(cn, parts, model, weight=1.0)], seeds=(9, 10))
    assert torch.equal(batch[:1], full)
    assert torch.equal(batch[1:], ours(parts, [hook(cn, parts, model, weight=1.0)], seeds=(10,)))


# the real transformers' configs (SD3 Medium, FLUX.1-dev), and ControlNets of their width
REAL_SD3 = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192)  # fmt: skip
REAL_FLUX = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                 guidance_embeds=True, axes_dims_rope=[16, 56, 56])  # fmt: skip
REAL_CONTROLNETS = {
    "sd3": ("SD3", {**REAL_SD3, "num_layers": 6}, REAL_SD3),
    "flux": ("Flux", {**REAL_FLUX, "num_layers": 5, "num_single_layers": 10}, REAL_FLUX),
    "xlabs": ("Flux", {**REAL_FLUX, "num_layers": 2, "num_single_layers": 0, "patch_size": 2,
                       "conditioning_embedding_channels": 16}, REAL_FLUX),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(REAL_CONTROLNETS))
def test_real_size_controlnets_get_their_config_from_the_shapes(kind: str, cn: SimpleNamespace) -> None:
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    from tests.fixtures_flow_controlnet import to_xlabs

    flow_layout = importlib.import_module(cn.models.__package__ + ".flow_layout")
    family, cfg, base = REAL_CONTROLNETS[kind]
    cls: Any = SD3ControlNetModel if family == "SD3" else FluxControlNetModel
    with torch.device("meta"):  # real widths, no memory
        model = cls(**cfg)
    sd = model.state_dict()
    if kind == "xlabs":
        sd = flow_layout.xlabs_to_diffusers(to_xlabs(model))
        assert flow_layout.is_xlabs(to_xlabs(model))
    name, got = flow_layout.config_for(sd, family, None, base)
    assert name == type(model).__name__
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items() if k in cfg} == cfg
    assert set(sd) == set(model.state_dict())
