"""IP-Adapter units in a job: encode each unit's reference image once, then patch each model call.

    before the model call, for the units active at this step (weight != 0, step/total in [start, end]):
        tokens_u = image_proj_u(clip_vision(image_u))        # cached for the job
        inputs.extra["ip_adapter_tokens"] = [uncond tokens on the uncond rows, cond tokens on the others]
        inputs.model = WithImagePrompt(inputs.model, processors)   # set for the call, undone after it

Nothing is changed in place between calls: the UNet's own attention processors are back as soon as the
call returns, so the next job (or a step where no unit is active) runs the model exactly as without
IP-Adapter. Several units (several adapters or reference images) add their attention in turn, each
scaled by its weight, as diffusers does with several IP-Adapters.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch

from webui.plugins.api import CheckpointError, RequestError

from .clip_vision import EncoderMissing, build_encoder, encode, find_encoder
from .ipadapter import (
    IPAdapterWeights,
    WithImagePrompt,
    attention_processors,
    check_fits,
    cross_attention_layers,
)
from .layout import ControlNetFileError
from .models import build_control_model, find_model
from .units import ControlUnit, UnitError


def _use(context: Any, components: Any, path: Any, build: Any, stack: ExitStack) -> Any:
    relative = path.relative_to(context.models_dir)
    return stack.enter_context(
        context.models.use(relative, build, device=components.device, dtype=components.dtype)
    )


def adapter_for(
    job: Any, unit: ControlUnit, components: Any, context: Any, stack: ExitStack
) -> IPAdapterWeights:
    """The unit's IP-Adapter, held for the block, checked against this job's UNet once."""
    path = find_model(list(job.files), unit.model).path

    def build(sd: dict[str, Any]) -> Any:
        return build_control_model(sd, path, None)

    try:
        model = _use(context, components, path, build, stack)
        if not isinstance(model, IPAdapterWeights):
            raise ControlNetFileError(
                f"{path.stem} is not an IP-Adapter; the {unit.module} preprocessor needs one "
                "(ip-adapter_sd15, ...)"
            )
        if id(model) not in job.checked:
            check_fits(model, cross_attention_layers(components.unet), path.stem)
            job.checked.add(id(model))
    except (ControlNetFileError, CheckpointError) as e:
        raise UnitError(unit.index, "model", str(e)) from e
    except RequestError as e:  # the file is gone, or leaves the models folder
        raise UnitError(unit.index, "model", e.message) from e
    return model


def tokens_for(
    job: Any, unit: ControlUnit, adapter: IPAdapterWeights, components: Any, context: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) image tokens of the unit, (1, tokens, text width) each; computed once per job."""
    key = (unit.index, id(adapter))
    if key in job.ip_tokens:
        return job.ip_tokens[key]  # type: ignore[no-any-return]
    image = unit.image if unit.image is not None else job.init_image
    if image is None:
        raise UnitError(unit.index, "image", "image is required (there is no init image to use)")
    try:
        path = find_encoder(unit.module, context.models_dir)
    except EncoderMissing as e:
        raise UnitError(unit.index, "module", str(e)) from e
    with ExitStack() as stack:
        try:
            encoder = _use(context, components, path, lambda sd: build_encoder(sd, path.name), stack)
        except (ControlNetFileError, CheckpointError) as e:
            raise UnitError(unit.index, "module", str(e)) from e
        width = int(
            encoder.config.hidden_size if adapter.uses_hidden_states else encoder.config.projection_dim
        )
        if width != adapter.image_width:
            raise UnitError(
                unit.index,
                "module",
                f"{path.name} gives image features {width} wide, the IP-Adapter reads {adapter.image_width}: "
                "pick the preprocessor made for this adapter (ip-adapter_clip_sd15 for ViT-H adapters, "
                "ip-adapter_clip_sdxl for ViT-bigG ones, ip-adapter_clip_sdxl_plus_vith for SDXL ..._vit-h)",
            )
        cond, uncond = encode(encoder, image, adapter.uses_hidden_states)
    with torch.no_grad():
        p = next(adapter.parameters())
        both = adapter.image_proj(torch.cat([cond, uncond]).to(device=p.device, dtype=p.dtype))
    job.ip_tokens[key] = (both[:1], both[1:])
    return job.ip_tokens[key]  # type: ignore[no-any-return]


def before_model(job: Any, units: list[ControlUnit], state: Any, components: Any, context: Any) -> None:
    """Patch this model call with the IP-Adapter units active at this step (none: nothing changes)."""
    active = [u for u in units if u.active_at(state.step, state.total)]
    if not active:
        return
    inputs = state.inputs
    with ExitStack() as stack:
        adapters = [adapter_for(job, u, components, context, stack) for u in active]
        tokens = [tokens_for(job, u, a, components, context) for u, a in zip(active, adapters, strict=True)]
    key = tuple((u.index, id(a)) for u, a in zip(active, adapters, strict=True))
    if key not in job.ip_layers:
        layers = cross_attention_layers(components.unet)
        job.ip_layers[key] = attention_processors(
            layers, [(a, u.weight) for u, a in zip(active, adapters, strict=True)]
        )
    rows, uncond_rows = inputs.rows, state.uncond_rows
    per_row = [
        torch.cat([uncond.expand(uncond_rows, -1, -1), cond.expand(rows - uncond_rows, -1, -1)])
        for cond, uncond in tokens
    ]
    inputs.extra = {**inputs.extra, WithImagePrompt.KEY: per_row}

    def hold() -> ExitStack:  # the adapters stay pinned in the model cache while the model runs
        stack = ExitStack()
        for u in active:
            adapter_for(job, u, components, context, stack)
        return stack

    inputs.model = WithImagePrompt(inputs.model, job.ip_layers[key], hold)
