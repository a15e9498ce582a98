"""What a request must satisfy once its model's family is known, and the infotext keys a family adds.

Validation that needs no model happens once, in `types`; these checks need the model's family: the
sizes its denoiser takes (multiples of 16 for SD3's and Flux's 2x2 patches: the request's and the hires
fix's; an outpainted canvas is checked where it is made, `img2img_batch.prepare_inputs`) and the
samplers it runs (flow-matching samplers for SD3/Flux, for both passes of a hires fix). Each failure is
a `RequestError` naming the field.
"""

from __future__ import annotations

from pathlib import Path

from webui.core import families
from webui.core.models.components import Components
from webui.core.sampling.catalog import SamplerCatalog
from webui.core.sampling.samplers import UnknownSampler
from webui.core.types import GenerationRequest, RequestError, Txt2ImgRequest


def fit_request(
    request: GenerationRequest, family: families.Family, samplers: SamplerCatalog
) -> tuple[str, str]:
    """Check the request against the family; return the (sampler, schedule type) names it runs under,
    as infotext records them."""
    for name in ("width", "height"):
        _check_multiple(family, name, "", getattr(request, name))
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        _fit_hires(request, family, samplers)
    try:
        return samplers.resolve_for(family.flow_matching, request.sampler_name, request.scheduler)
    except UnknownSampler as e:
        raise RequestError(e.field, f"{e} (the model is {family.group_label})") from e


def _check_multiple(family: families.Family, field: str, what: str, *sides: int) -> None:
    """Each side a multiple of the family's size multiple, or a RequestError on `field`."""
    m = family.latent.size_multiple
    if any(side % m for side in sides):
        size = "x".join(str(s) for s in sides)
        message = f"{what}must be a multiple of {m} for {family.group_label} models, got {size}"
        raise RequestError(field, message)


def _fit_hires(request: Txt2ImgRequest, family: families.Family, samplers: SamplerCatalog) -> None:
    """The second pass's sampler runs on this family and its size fits the denoiser's patches."""
    try:
        samplers.resolve_for(family.flow_matching, *request.hr_sampler(samplers, family.flow_matching))
    except UnknownSampler as e:
        field = "hr_scheduler" if e.field == "scheduler" else "hr_sampler_name"
        raise RequestError(field, f"{e} (the model is {family.group_label})") from e
    field = "hr_scale" if request.hr_resize_x == 0 and request.hr_resize_y == 0 else "hr_resize_x"
    _check_multiple(family, field, "the hires fix size ", *request.hr_target.size)


def family_params(
    request: GenerationRequest, checkpoint: Path, parts: Components, family: families.Family
) -> dict[str, object]:
    """The infotext keys of the model's family (Forge's): `Distilled CFG Scale`, `Shift` (a fixed
    flow shift) and `Module 1..n` (the files a model was assembled from besides `checkpoint`)."""
    params: dict[str, object] = {}
    if family.distilled_guidance:
        params["Distilled CFG Scale"] = request.distilled_cfg_scale
    config = parts.scheduler_config
    if family.flow_matching and not config.get("use_dynamic_shifting"):
        params["Shift"] = float(config.get("shift", 1.0))
    modules = sorted({p.stem for p in parts.sources.values() if p != checkpoint})
    for i, name in enumerate(modules, 1):
        params[f"Module {i}"] = name
    return params
