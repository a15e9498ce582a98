"""One job's ControlNet units: checked when the job is submitted, run before each model call.

`JobState` travels in the job's request (`extension_args.controlnet._job`, set by `request_received`
for this run only; it is never stored) and keeps what the job's model calls share: the units'
control images made ready at each pass's size (the first pass, a hires fix pass at its own size, an
img2img pass at the init image's size) and the T2I-Adapter features. The ControlNets themselves are
held by the extension-model cache (`context.models.use`), pinned for each model call, on the job's
device and in its dtype.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import CheckpointError, HookPoint, RequestError

from . import flow_units, image_prompt
from .annotator_files import Nets
from .clip_vision import EncoderMissing, find_encoder, is_ip_module
from .control_lora import ControlLoraWeights, dense
from .ipadapter import IPAdapterWeights
from .layout import ControlNetFileError
from .models import ControlNetFile, build_control_model, check_model, find_model
from .preprocess import AnnotatorUnavailable, get_module
from .residuals import ActiveUnit, ControlNetHook, image_size, units_at_size
from .units import ControlUnit, UnitError


@dataclass(eq=False)
class JobState:
    units: tuple[ControlUnit, ...]
    files: tuple[ControlNetFile, ...]
    init_image: Image.Image | None = None
    init_mask: Image.Image | None = None  # "L", init_image's size: the job's inpaint mask (inpaint units)
    # (width, height, ids of the models) -> the units ready at that size, and their adapter features
    ready: dict[tuple[Any, ...], tuple[list[ActiveUnit], dict[int, Any]]] = field(default_factory=dict)
    checked: set[int] = field(default_factory=set)  # ids of the models checked against this job's UNet
    # IP-Adapter units: (unit index, id of its adapter) -> (cond, uncond) image tokens; the attention
    # processors of each set of active units
    ip_tokens: dict[tuple[int, int], Any] = field(default_factory=dict)
    ip_layers: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    # Control-LoRA units: (id of the cached low-rank weights, id of the UNet) -> the dense ControlNet
    # built from this job's UNet for this job only
    dense: dict[tuple[int, int], tuple[Any, Any]] = field(default_factory=dict)  # (weights, ControlNet)
    unet_checked: bool = False  # no unit names an SD3 / Flux ControlNet (UNet checkpoints)

    def __repr__(self) -> str:
        return f"JobState({len(self.units)} units)"


def check_modules(units: list[ControlUnit], models_dir: Path) -> None:
    """UnitError for a preprocessor whose annotator weights (or CLIP vision encoder) are missing,
    before the job runs."""
    for u in units:
        if is_ip_module(u.module):
            try:
                find_encoder(u.module, models_dir)
            except EncoderMissing as e:
                raise UnitError(u.index, "module", str(e)) from e
            continue
        try:
            get_module(u.module, models_dir)
        except AnnotatorUnavailable as e:
            raise UnitError(u.index, "module", str(e)) from e


def _unit_model(job: JobState, unit: ControlUnit, components: Any, context: Any, stack: ExitStack) -> Any:
    path = find_model(list(job.files), unit.model).path
    unet_config = dict(components.unet.config)

    def build(sd: dict[str, Any]) -> Any:
        return build_control_model(sd, path, unet_config)

    try:
        model = stack.enter_context(
            context.models.use(
                path.relative_to(context.models_dir), build, device=components.device, dtype=components.dtype
            )
        )
        if isinstance(model, IPAdapterWeights):
            raise ControlNetFileError(
                f"{path.stem} is an IP-Adapter; use it with an ip-adapter_* preprocessor "
                "(ip-adapter_clip_sd15, ...)"
            )
        if isinstance(model, ControlLoraWeights):
            key = (id(model), id(components.unet))
            if key not in job.dense:
                job.dense[key] = (model, dense(model, components.unet, path.stem).to(components.device))
            model = job.dense[key][1]
        if id(model) not in job.checked:
            check_model(model, unet_config, path.stem)
            job.checked.add(id(model))
    except (ControlNetFileError, CheckpointError) as e:
        raise UnitError(unit.index, "model", str(e)) from e
    except RequestError as e:  # the file is gone, or leaves the models folder
        raise UnitError(unit.index, "model", e.message) from e
    return model


def before_model(job: JobState, state: Any, components: Any, context: Any) -> None:
    """Add the job's active units' residuals to this model call, and its IP-Adapter units' image
    prompt; for SD3 / Flux checkpoints their ControlNets' block outputs (flow_units.py). RequestError
    naming the unit and field when a unit cannot run with this job's model."""
    if components.unet is None:
        if components.transformer is None:
            raise UnitError(
                job.units[0].index,
                "model",
                f"ControlNet units need an SD 1.x, SD 2.x, SDXL, SD3 or Flux checkpoint; this one is "
                f"{components.label}",
            )
        flow_units.before_model(job, list(job.units), state, components, context)
        return
    if not job.unet_checked:
        flow_units.check_unet_job(job, components)
        job.unet_checked = True
    control = [u for u in job.units if not is_ip_module(u.module)]
    if control:
        _control(job, control, state, components, context)
    image_prompts = [u for u in job.units if is_ip_module(u.module)]
    if image_prompts:
        image_prompt.before_model(job, image_prompts, state, components, context)


def _control(job: JobState, units: list[ControlUnit], state: Any, components: Any, context: Any) -> None:
    active_now = [u for u in units if u.active_at(state.step, state.total)]
    if not active_now:
        return
    size = image_size(state, components.vae)
    with ExitStack() as stack:
        models = {u.index: _unit_model(job, u, components, context, stack) for u in units}
        nets = Nets(context.models, components.device)  # annotators: cached, on the job's device
        active, features = units_at_size(job, units, models, size, context.models_dir, nets=nets)
        ControlNetHook(active, features)(HookPoint.BEFORE_MODEL, state)
