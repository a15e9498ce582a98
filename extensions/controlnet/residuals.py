"""The ControlNet residuals of one model call: a BEFORE_MODEL hook for the core's denoising loop.

    for each active unit u:                       # weight != 0 and step/total in [start, end]
        down_u, mid_u = controlnet_u(x, t, text, control image_u) * scales_u
    inputs.extra += {down_block_additional_residuals: sum of down_u,
                     mid_block_additional_residual: sum of mid_u}

The UNet adds the residuals to its skip connections (diffusers' `down_block_additional_residuals`);
several units are summed, as diffusers' MultiControlNet does. The control modes follow
sd-webui-controlnet:

- Balanced: every output scaled by the weight, on every row (cond and uncond), as diffusers'
  StableDiffusionControlNetPipeline does (the parity test holds it to that);
- My prompt is more important: "soft injection": output k of N (N-1 encoder outputs, then the middle
  block) scaled by weight * 0.825^(N-1-k), so the shallow outputs act least, on every row;
- ControlNet is more important: the same soft scales, and only on the conditional rows (the negative
  prompt's rows get no residual, so guidance pushes towards the control). Only those rows go through
  the ControlNet. (diffusers' `guess_mode` is similar but scales with logspace(-1, 0) instead.)

A ControlNet with global average pooling (shuffle) acts on the conditional rows only in every mode, as
in both sd-webui-controlnet and diffusers.

T2I-Adapters (a unit whose model file is one) work the same way with one difference: their features
depend on the control image only, so they are computed once per job (per hook) and added as
`down_intrablock_additional_residuals`, scaled and masked by the same rules.

When the loop runs the model once per image (`state.per_image`), each ControlNet does too, so image i
of a batch stays bit-identical to a single run with its seed.

The hook reads `state.step`, `state.total`, `state.uncond_rows`, `state.images`, `state.per_image` and
`state.inputs` (a ModelInputs: sample, timestep, kwargs with encoder_hidden_states and SDXL's
added_cond_kwargs, extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from webui.plugins.api import HookPoint

from .annotator_files import Nets
from .images import control_tensor, pixel_perfect_resolution
from .layout import ControlNetFileError
from .models import ControlNetFile, find_model
from .preprocess import AnnotatorUnavailable
from .preprocess import run as run_preprocessor
from .units import ControlMode, ControlUnit, UnitError

SOFT_DECAY = 0.825
INPAINT_MODULES = ("inpaint", "inpaint_only")
DOWN = "down_block_additional_residuals"
MID = "mid_block_additional_residual"
INTRA = "down_intrablock_additional_residuals"


@dataclass(frozen=True, eq=False)
class ActiveUnit:
    """A unit ready to run: its ControlNet and its control image at the generation size."""

    unit: ControlUnit
    model: Any  # diffusers ControlNetModel or T2IAdapter
    image: torch.Tensor  # (1, C, H, W), [0, 1] (-1: inpaint-masked pixels)
    control_map: Image.Image  # the preprocessed map, for previews and "save detected map"

    @property
    def is_adapter(self) -> bool:
        return is_adapter_model(self.model)


def is_adapter_model(model: Any) -> bool:
    from diffusers import T2IAdapter

    return isinstance(model, T2IAdapter)


def soft_scales(weight: float, outputs: int) -> list[float]:
    """sd-webui-controlnet's soft-injection scales for `outputs` residuals (encoder ones, then middle)."""
    return [weight * SOFT_DECAY ** float(outputs - 1 - k) for k in range(outputs)]


def _run(active: ActiveUnit, sub: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The unit's ControlNet on the rows of `sub`, scaled."""
    unit = active.unit
    sample = sub.sample
    image = active.image.to(device=sample.device, dtype=sample.dtype).repeat(sample.shape[0], 1, 1, 1)
    balanced = unit.control_mode is ControlMode.BALANCED
    down, mid = active.model(
        sample,
        sub.timestep,
        encoder_hidden_states=sub.kwargs["encoder_hidden_states"],
        controlnet_cond=image,
        conditioning_scale=unit.weight if balanced else 1.0,
        added_cond_kwargs=sub.kwargs.get("added_cond_kwargs"),
        return_dict=False,
    )
    down = list(down)
    if not balanced:
        scales = soft_scales(unit.weight, len(down) + 1)
        down = [d * s for d, s in zip(down, scales, strict=False)]
        mid = mid * scales[-1]
    return down, mid


def row_sets(rows: int, skip: int, images: int, per_image: bool) -> list[list[int]]:
    """The row sets to run the ControlNet on: every row but the first `skip`, all at once, or one set
    per image (row r is image r % images) when the model itself runs per image."""
    wanted = list(range(skip, rows))
    if not per_image or images <= 1:
        return [wanted]
    return [[r for r in wanted if r % images == i] for i in range(images)]


@torch.no_grad()
def unit_residuals(
    active: ActiveUnit, inputs: Any, uncond_rows: int, images: int = 1, per_image: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One unit's (down residuals, mid residual) for every row of `inputs` (zero on the rows it skips)."""
    rows = inputs.rows
    pooled = bool(getattr(active.model.config, "global_pool_conditions", False))  # shuffle: cond rows only
    cond_only = (active.unit.control_mode is ControlMode.CONTROL or pooled) and 0 < uncond_rows < rows
    sets = row_sets(rows, uncond_rows if cond_only else 0, images, per_image)
    if sets == [list(range(rows))]:
        return _run(active, inputs)
    parts = [(idx, _run(active, inputs.select(idx))) for idx in sets]
    first_down, first_mid = parts[0][1]
    down = [d.new_zeros((rows, *d.shape[1:])) for d in first_down]
    mid = first_mid.new_zeros((rows, *first_mid.shape[1:]))
    for idx, (d_part, m_part) in parts:
        for full, part in zip(down, d_part, strict=True):
            full[idx] = part
        mid[idx] = m_part
    return down, mid


@torch.no_grad()
def adapter_features(active: ActiveUnit) -> list[torch.Tensor]:
    """A T2I-Adapter unit's features (one row each), scaled by its weight or soft scales."""
    p = next(active.model.parameters())
    features = list(active.model(active.image.to(device=p.device, dtype=p.dtype)))
    if active.unit.control_mode is ControlMode.BALANCED:
        return [f * active.unit.weight for f in features]
    return [f * s for f, s in zip(features, soft_scales(active.unit.weight, len(features)), strict=True)]


def _rows(features: list[torch.Tensor], rows: int, uncond_rows: int) -> list[torch.Tensor]:
    """Features repeated for every row, zero on the first `uncond_rows`."""
    out = [f.repeat(rows, 1, 1, 1) for f in features]
    for f in out:
        f[:uncond_rows] = 0
    return out


def _add(a: list[torch.Tensor] | None, b: list[torch.Tensor]) -> list[torch.Tensor]:
    return b if a is None else [x + y for x, y in zip(a, b, strict=True)]


class ControlNetHook:
    """A core ModelHook: adds the residuals of the units active at this step to the model call.
    One hook per job (it keeps the job's T2I-Adapter features)."""

    def __init__(
        self, units: Sequence[ActiveUnit], features: dict[int, list[torch.Tensor]] | None = None
    ) -> None:
        self.units = tuple(units)
        # the T2I-Adapter features by unit position; pass a dict to keep them across hooks of one job
        self._features: dict[int, list[torch.Tensor]] = {} if features is None else features

    def _intrablock(self, i: int, active: ActiveUnit, rows: int, uncond_rows: int) -> list[torch.Tensor]:
        if i not in self._features:
            self._features[i] = adapter_features(active)
        cond_only = active.unit.control_mode is ControlMode.CONTROL and uncond_rows < rows
        return _rows(self._features[i], rows, uncond_rows if cond_only else 0)

    def __call__(self, point: HookPoint, state: Any) -> None:
        if point is not HookPoint.BEFORE_MODEL:
            return
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        intra: list[torch.Tensor] | None = None
        inputs = state.inputs
        for i, active in enumerate(self.units):
            if not active.unit.active_at(state.step, state.total):
                continue
            if active.is_adapter:
                intra = _add(intra, self._intrablock(i, active, inputs.rows, state.uncond_rows))
                continue
            d, m = unit_residuals(active, inputs, state.uncond_rows, state.images, state.per_image)
            if down is None or mid is None:
                down, mid = d, m
            else:
                down, mid = _add(down, d), mid + m
        if down is None and intra is None:
            return  # nothing active: the call is exactly as without ControlNet
        extra = dict(inputs.extra)
        if down is not None and mid is not None:
            if DOWN in extra:  # another hook's residuals: add ours
                down = _add(extra[DOWN], down)
                mid = extra[MID] + mid
            extra[DOWN], extra[MID] = down, mid
        if intra is not None:
            extra[INTRA] = _add(extra.get(INTRA), intra)
        inputs.extra = extra


def image_size(state: Any, vae: Any) -> tuple[int, int]:
    """(width, height) in pixels of the images this model call's latents decode to."""
    height, width = state.inputs.sample.shape[-2:]
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return int(width) * scale, int(height) * scale


def units_at_size(
    job: Any,
    units: Sequence[ControlUnit],
    models: dict[int, Any],
    size: tuple[int, int],
    models_dir: Path,
    *,
    tag: tuple[Any, ...] = (),
    keep: Callable[[list[ActiveUnit]], Any] = lambda ready: {},
    nets: Nets | None = None,
) -> tuple[list[ActiveUnit], Any]:
    """The job's units prepared for images of `size` (prepare_units, annotator networks through `nets`)
    with their loaded `models` (unit index -> model), and what `keep(ready)` adds beside them (a family's
    encoded control inputs, a cache of features); made once per size and models and kept in `job.ready`
    for the job's other calls."""
    key = (*tag, *size, *(id(models[u.index]) for u in units))
    if key not in job.ready:
        by_path = {find_model(list(job.files), u.model).path: models[u.index] for u in units}
        ready = prepare_units(
            units,
            width=size[0],
            height=size[1],
            models=job.files,
            load=by_path.__getitem__,
            init_image=job.init_image,
            init_mask=job.init_mask,
            models_dir=models_dir,
            nets=nets,
        )
        job.ready[key] = (ready, keep(ready))
    found: tuple[list[ActiveUnit], Any] = job.ready[key]
    return found


def prepare_units(
    units: Sequence[ControlUnit],
    *,
    width: int,
    height: int,
    models: Sequence[ControlNetFile],
    load: Callable[[Path], Any],
    init_image: Image.Image | None = None,
    models_dir: Path | None = None,
    init_mask: Image.Image | None = None,
    nets: Nets | None = None,
) -> list[ActiveUnit]:
    """Preprocess each unit's image (or the init image; an inpaint unit without its own image gets
    `init_mask`, the job's mask, with it; annotator networks through `nets`: the extension's cache and
    the job's device) and load its ControlNet with `load(path)`
    (the caller's loader: it picks the device, dtype and cache, and checks the base model).
    Errors name the unit and field."""
    out = []
    for unit in units:
        image = unit.image if unit.image is not None else init_image
        if image is None:
            raise UnitError(unit.index, "image", "image is required (there is no init image to use)")
        mask = unit.mask
        if mask is None and unit.image is None and unit.module in INPAINT_MODULES:
            mask = init_mask  # an inpaint unit on the job's own picture repaints the job's mask
        if mask is not None:
            image = image.convert("RGB")
            image.putalpha(mask)
        res = unit.processor_res
        if unit.pixel_perfect:
            res = pixel_perfect_resolution(image.size, (width, height), unit.resize_mode)
        try:
            control_map = run_preprocessor(
                unit.module, image, res, unit.threshold_a, unit.threshold_b, models_dir, nets
            )
        except AnnotatorUnavailable as e:
            raise UnitError(unit.index, "module", str(e)) from e
        try:
            path = find_model(list(models), unit.model).path
        except KeyError:
            raise UnitError(
                unit.index, "model", f"model {unit.model!r} is not in models/ControlNet"
            ) from None
        try:
            model = load(path)
        except ControlNetFileError as e:
            raise UnitError(unit.index, "model", str(e)) from e
        gray = is_adapter_model(model) and model.config.in_channels == 1  # sketch/canny adapters
        image_t = control_tensor(control_map, width, height, unit.resize_mode, gray=gray)
        out.append(ActiveUnit(unit, model, image_t, control_map))
    return out
