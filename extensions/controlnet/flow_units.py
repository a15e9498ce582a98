"""An SD3 / Flux job's ControlNet units, run before each transformer call.

    control latents = (VAE.encode(control image in [-1, 1]).mean - shift) * scale    # once per size
    for each active unit u:                      # weight != 0 and step/total in [start, end]
        samples_u = controlnet_u(the transformer's own inputs, control latents_u) * weight_u
    SD3:  extra["block_controlnet_hidden_states"] = sum of samples_u
    Flux: extra["controlnet_block_samples"], extra["controlnet_single_block_samples"] = sums

As diffusers' StableDiffusion3ControlNetPipeline and FluxControlNetPipeline do: the control image is
VAE-encoded (InstantX SD3 ControlNets: no shift, zero pooled projections), packed into 2x2 tokens for
Flux, and every row of the call (negative prompt included) gets the ControlNet's output. The posterior's
mean is used where the pipelines draw a sample from it, so a seed gives the same picture every time.
XLabs' Flux ControlNets take the control image itself (in [-1, 1]) through their hint encoder, and
their few blocks repeat over the transformer's (`controlnet_blocks_repeat`), as in FluxControlNetPipeline.
The ControlNet gets exactly the transformer's inputs (`state.denoiser_kwargs`: Flux's packed latents,
ids and distilled guidance), and runs once per image when the loop does (`state.per_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch

from webui.plugins.api import CheckpointError, HookPoint, RequestError

from .annotator_files import Nets
from .clip_vision import is_ip_module
from .flow_layout import UNION_TYPES, a_family, check_base, family_of, union_type, uses_pixels
from .layout import ControlNetFileError
from .models import build_control_model, find_model, foreign_family
from .residuals import ActiveUnit, image_size, row_sets, units_at_size
from .units import ControlUnit, UnitError

SD3_KEY = "block_controlnet_hidden_states"
FLUX_KEYS = ("controlnet_block_samples", "controlnet_single_block_samples")
REPEAT = "controlnet_blocks_repeat"  # Flux: the ControlNet's few blocks cycle over the transformer's (XLabs)


def check_unet_job(job: Any, components: Any) -> None:
    """UnitError for an SD3 / Flux ControlNet in a job of a UNet checkpoint (read from the file's
    header, before anything is loaded)."""
    for u in job.units:
        found = foreign_family(find_model(list(job.files), u.model))
        if found is not None:
            raise UnitError(
                u.index,
                "model",
                f"{_name(job, u)} is {a_family(found[0])} ControlNet and cannot be used with this "
                f"{components.family} checkpoint; pick a ControlNet made for the checkpoint's base model",
            )


def _name(job: Any, unit: ControlUnit) -> str:
    return find_model(list(job.files), unit.model).name


def _unit_model(job: Any, unit: ControlUnit, components: Any, context: Any, stack: ExitStack) -> Any:
    found = find_model(list(job.files), unit.model)
    path, name = found.path, found.name
    base = dict(components.transformer.config)
    wrong = (
        f"{name} is not an SD3 or Flux ControlNet and cannot be used with this {components.family} "
        "checkpoint; pick a ControlNet made for the checkpoint's base model"
    )

    def build(sd: dict[str, Any]) -> Any:
        return build_control_model(sd, path, base)

    try:
        if foreign_family(found) is None and path.suffix == ".safetensors":
            raise ControlNetFileError(wrong)  # told by the header: nothing is loaded
        model = stack.enter_context(
            context.models.use(
                path.relative_to(context.models_dir), build, device=components.device, dtype=components.dtype
            )
        )
        if family_of(model) is None:
            raise ControlNetFileError(wrong)
        if id(model) not in job.checked:
            check_base(model, components.family, base, components.family, name)
            job.checked.add(id(model))
    except (ControlNetFileError, CheckpointError) as e:
        raise UnitError(unit.index, "model", str(e)) from e
    except RequestError as e:  # the file is gone, or leaves the models folder
        raise UnitError(unit.index, "model", e.message) from e
    return model


@torch.no_grad()
def control_input(vae: Any, image: torch.Tensor, model: Any) -> torch.Tensor:
    """The control image (1, 3, H, W) in [0, 1] as the ControlNet takes it: VAE latents (the
    posterior's mean), shifted (not for InstantX SD3 ControlNets) and scaled as the family's latents;
    for XLabs' ControlNets the image itself in [-1, 1]."""
    if uses_pixels(model):
        return image * 2 - 1
    p = next(vae.parameters())
    z = vae.encode((image * 2 - 1).to(device=p.device, dtype=p.dtype)).latent_dist.mode()
    zero_pooled = family_of(model) == "SD3" and model.config.force_zeros_for_pooled_projection
    shift = 0.0 if zero_pooled else float(getattr(vae.config, "shift_factor", None) or 0.0)
    return (z - shift) * float(vae.config.scaling_factor)


def _run(active: ActiveUnit, latents: torch.Tensor, inputs: Any, state: Any) -> dict[str, Any]:
    """One unit's ControlNet outputs for the rows of `inputs`, scaled by its weight."""
    kw = state.denoiser_kwargs(inputs)
    model, rows = active.model, inputs.rows
    sample = inputs.sample
    cond = latents.to(device=sample.device, dtype=sample.dtype)
    cond = cond if uses_pixels(model) else state.denoiser_latents(cond)
    cond = cond.repeat(rows, *(1,) * (cond.dim() - 1))
    cfg = model.config
    if family_of(model) == "SD3":
        pooled = kw["pooled_projections"]
        text = kw["encoder_hidden_states"] if cfg.joint_attention_dim is not None else None
        (samples,) = model(
            hidden_states=kw["hidden_states"],
            timestep=kw["timestep"],
            encoder_hidden_states=text,
            pooled_projections=torch.zeros_like(pooled) if cfg.force_zeros_for_pooled_projection else pooled,
            controlnet_cond=cond,
            conditioning_scale=active.unit.weight,
            return_dict=False,
        )
        return {SD3_KEY: list(samples)}
    guidance = None
    if cfg.guidance_embeds:
        guidance = kw.get("guidance")
        if guidance is None:
            scale = inputs.kwargs.get("guidance")
            if scale is None:
                raise UnitError(
                    active.unit.index,
                    "model",
                    "this Flux ControlNet takes a distilled guidance scale, which this checkpoint has not",
                )
            guidance = torch.full((rows,), float(scale), device=sample.device, dtype=torch.float32)
    mode = None
    if cfg.num_mode is not None:
        name = union_type(active.unit.union_control_type)
        if name is None:
            raise UnitError(
                active.unit.index, "union_control_type", "a Flux Union ControlNet needs union_control_type"
            )
        mode = torch.full((rows, 1), UNION_TYPES[name], device=sample.device, dtype=torch.long)
    elif union_type(active.unit.union_control_type) is not None:
        raise UnitError(
            active.unit.index, "union_control_type", "only Flux Union ControlNets take a union_control_type"
        )
    blocks, singles = model(
        hidden_states=kw["hidden_states"],
        controlnet_cond=cond,
        controlnet_mode=mode,
        conditioning_scale=active.unit.weight,
        timestep=kw["timestep"],
        guidance=guidance,
        pooled_projections=kw["pooled_projections"],
        encoder_hidden_states=kw["encoder_hidden_states"],
        txt_ids=kw["txt_ids"],
        img_ids=kw["img_ids"],
        return_dict=False,
    )
    out = {k: list(v) for k, v in zip(FLUX_KEYS, (blocks, singles), strict=True) if v is not None}
    return {**out, REPEAT: uses_pixels(model)}


def unit_samples(active: ActiveUnit, latents: torch.Tensor, state: Any) -> dict[str, Any]:
    """One unit's outputs for every row of the call (per image when the loop runs per image)."""
    inputs = state.inputs
    sets = row_sets(inputs.rows, 0, state.images, state.per_image)
    if len(sets) == 1:
        return _run(active, latents, inputs, state)
    parts = [(idx, _run(active, latents, inputs.select(idx), state)) for idx in sets]
    out: dict[str, Any] = {k: v for k, v in parts[0][1].items() if not isinstance(v, list)}
    for key, first in parts[0][1].items():
        if not isinstance(first, list):
            continue
        full = [t.new_zeros((inputs.rows, *t.shape[1:])) for t in first]
        for idx, part in parts:
            for f, p in zip(full, part[key], strict=True):
                f[idx] = p
        out[key] = full
    return out


def _add(extra: dict[str, Any], key: str, samples: Any, unit: ControlUnit) -> None:
    if key == REPEAT:  # one way for every unit of the call
        if extra.setdefault(REPEAT, samples) != samples:
            raise UnitError(unit.index, "model", "XLabs and InstantX Flux ControlNets cannot be combined")
        return
    if extra.get(key) is None:
        extra[key] = samples
        return
    if [a.shape for a in extra[key]] != [b.shape for b in samples]:
        raise UnitError(unit.index, "model", "its ControlNet's outputs do not add up with the other units'")
    extra[key] = [a + b for a, b in zip(extra[key], samples, strict=True)]


class FlowControlHook:
    """A core ModelHook: adds the outputs of the units active at this step to the transformer call
    (`latents[i]`: unit i's control input, `control_input`)."""

    def __init__(self, units: Sequence[ActiveUnit], latents: Sequence[torch.Tensor]) -> None:
        self.units, self.latents = tuple(units), tuple(latents)

    def __call__(self, point: HookPoint, state: Any) -> None:
        if point is not HookPoint.BEFORE_MODEL:
            return
        extra = dict(state.inputs.extra)
        for active, latents in zip(self.units, self.latents, strict=True):
            if active.unit.active_at(state.step, state.total):
                for name, samples in unit_samples(active, latents, state).items():
                    _add(extra, name, samples, active.unit)
        state.inputs.extra = extra


def before_model(job: Any, units: list[ControlUnit], state: Any, components: Any, context: Any) -> None:
    """Add the outputs of the job's units active at this step to the transformer call."""
    for u in units:
        if is_ip_module(u.module):
            raise UnitError(
                u.index, "module", f"IP-Adapter units need an SD 1.x or SDXL model, not {components.family}"
            )
    if not any(u.active_at(state.step, state.total) for u in units):
        return
    size = image_size(state, components.vae)
    vae = components.vae

    def encode(ready: list[ActiveUnit]) -> dict[int, torch.Tensor]:
        return {i: control_input(vae, a.image.clamp(0, 1), a.model) for i, a in enumerate(ready)}

    with ExitStack() as stack:
        models = {u.index: _unit_model(job, u, components, context, stack) for u in units}
        ready, latents = units_at_size(
            job,
            units,
            models,
            size,
            context.models_dir,
            tag=("flow",),
            keep=encode,
            nets=Nets(context.models, components.device),  # annotators: cached, on the job's device
        )
        FlowControlHook(ready, [latents[i] for i in range(len(ready))])(HookPoint.BEFORE_MODEL, state)
