"""The models a job's passes run on besides its own checkpoint: the hires pass's (`hr_checkpoint_name`)
and the refiner (`refiner_checkpoint`), as A1111 1.6+ runs them.

- `check` (when a request is submitted): each name is a listed checkpoint, still on disk, of a family
  that can take over (the hires checkpoint: the same family group, e.g. SD1 and an SD1 inpainting model;
  the refiner: the same architecture as the pass it joins, since it continues that pass's scheduler).
  Files whose family cannot be read cheaply (`.ckpt`) are checked again once loaded.
- `open_pass_models` (for the run): holds those models through the model manager (cached, pinned for
  the job), patches each with the LoRAs of the pass it runs in, and gives the batches their
  `second_pass` context and `Refiner`, plus the infotext keys ("Hires checkpoint", "Refiner", ...).

A name that resolves to the job's own checkpoint is that model: a hires checkpoint equal to the job's
changes nothing but the infotext; a refiner equal to the model of the pass it joins is ignored (as in
A1111, which only switches to a model that is not loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from webui.core import families
from webui.core.models.manager import LoadedModel, ModelManager, ModelNotFound
from webui.core.models.registry import ModelFile
from webui.core.networks.apply import AppliedInfo, NetworkCache, apply_networks
from webui.core.networks.registry import LoraFile
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder, model_key
from webui.core.tasks import hires_networks
from webui.core.tasks.context import Encode, PassModel, Refiner
from webui.core.types import GenerationRequest, RequestError, Txt2ImgRequest

Networks = Sequence[tuple[LoraFile, float, float]]
HIRES, REFINER = "hr_checkpoint_name", "refiner_checkpoint"


def short_title(file: ModelFile) -> str:
    """A1111's short title, as its infotext records checkpoints: "name [shorthash]"."""
    return f"{file.model_name} [{file.shorthash}]" if file.shorthash else file.model_name


def _resolve(manager: ModelManager, field: str, name: str) -> ModelFile:
    try:
        file = manager.resolve(name)
    except ModelNotFound as e:
        raise RequestError(field, str(e)) from e
    if not file.path.exists():
        raise RequestError(field, f"{file.name!r} is no longer in its models folder (deleted or moved)")
    return file


def check_family(field: str, name: str, family: families.Family, joins: families.Family) -> None:
    """RequestError on `field` unless a `family` model can run the pass of a `joins` model."""
    if field == HIRES and (family.group != joins.group or not family.supports("img2img")):
        raise RequestError(
            field,
            f"{name} is {family.group_label} and the checkpoint is {joins.group_label}: the hires pass "
            "runs on a checkpoint of the same family",
        )
    if field == REFINER and family.arch != joins.arch:
        why = ""
        if family.group == "sdxl-refiner":
            why = " (SDXL refiner models, with their aesthetic-score conditioning, are not supported yet)"
        raise RequestError(
            field,
            f"{name} is {family.group_label} ({family.arch}) and the pass it would join runs "
            f"{joins.group_label} ({joins.arch}): a refiner "
            f"continues that pass's sampling, so it needs the same architecture{why}",
        )


def check(request: GenerationRequest, manager: ModelManager) -> None:
    """RequestError for a hires checkpoint or refiner that is not listed, gone, or of another family."""
    hr = request.hr_checkpoint if isinstance(request, Txt2ImgRequest) else None
    if hr is None and request.refiner is None:
        return
    base = manager.family_of(manager.resolve(request.checkpoint or None))
    joins = base
    if hr is not None:
        family = manager.family_of(_resolve(manager, HIRES, hr))
        if family is not None and base is not None:
            check_family(HIRES, hr, family, base)
        joins = family or base
    if request.refiner is not None:
        family = manager.family_of(_resolve(manager, REFINER, request.refiner))
        if family is not None and joins is not None:
            check_family(REFINER, request.refiner, family, joins)


@dataclass(frozen=True)
class PassModels:
    """What the batches get: the second pass's context (None: the job's model as it is), the refiner."""

    second_pass: Callable[[], AbstractContextManager[PassModel]] | None = None
    refiner: Refiner | None = None
    infotext: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Encoders:
    """Prompt encoders for the job's models, sharing its encoding cache and embeddings."""

    encodings: EncodingCache
    embeddings: Any
    clip_skip: int

    def encode(self, model: LoadedModel, applied: AppliedInfo) -> Encode:
        f = model.file
        key = (model_key(f.path, f.size, f.mtime_ns), applied.text_encoder_key)
        encoder = PromptEncoder(model.components, key, self.encodings, self.embeddings)
        skip = self.clip_skip

        def encode(prompt: str, negative: str, steps: int) -> Any:
            cond = encoder.schedule(prompt, steps, skip)
            return cond, encoder.schedule(negative, steps, skip, multicond=False)

        return encode


@contextmanager
def open_pass_models(
    manager: ModelManager,
    request: GenerationRequest,
    base: LoadedModel,
    first: tuple[PassModel, AppliedInfo, Networks],
    hires: Networks | None,
    cache: NetworkCache,
    encoders: Encoders,
    messages: list[str],
) -> Iterator[PassModels]:
    """Hold the job's other models for the block. `first` is the job's model as the first pass runs it
    (with its applied networks and their list), `hires` the hires prompt's networks when they differ
    (None: the first pass's). Messages about networks on the other models are appended to `messages`."""
    base_model, first_applied, first_networks = first
    enable_hr = isinstance(request, Txt2ImgRequest) and request.enable_hr
    hr = request.hr_checkpoint if isinstance(request, Txt2ImgRequest) else None
    infotext: dict[str, object] = {}
    opened: dict[object, tuple[PassModel, families.Family]] = {}
    with ExitStack() as stack:

        def open_model(file: ModelFile, networks: Networks) -> tuple[PassModel, families.Family]:
            if file.path not in opened:
                loaded = stack.enter_context(manager.acquire(file.title, request.vae, request.modules))
                applied = stack.enter_context(apply_networks(loaded.components, networks, cache))
                messages.extend(m for m in applied.messages if m not in messages)
                model = PassModel(loaded.components, encoders.encode(loaded, applied))
                opened[file.path] = (model, families.of(loaded.components))
            return opened[file.path]

        base_family = families.of(base.components)
        second_pass = None
        joins = (base_model, base_family, base.file.path)  # the model of the pass a refiner joins
        if hr is not None:
            hr_file = _resolve(manager, HIRES, hr)
            infotext["Hires checkpoint"] = short_title(hr_file)
        if hr is not None and hr_file.path != base.file.path:
            model, family = open_model(hr_file, first_networks if hires is None else hires)
            check_family(HIRES, hr, family, base_family)
            second_pass = _fixed(model)
            joins = (model, family, hr_file.path)
        elif hires is not None:
            second_pass = hires_networks.second_pass_scope(
                base.components,
                first_applied,
                hires,
                cache,
                model_key(base.file.path, base.file.size, base.file.mtime_ns),
                encoders.encodings,
                encoders.embeddings,
                encoders.clip_skip,
                messages,
            )
        refiner = None
        name = request.refiner
        if name is not None:
            file = _resolve(manager, REFINER, name)
            if file.path != joins[2]:
                if file.path == base.file.path:  # hires on another checkpoint, then back to the job's
                    if hires is not None and enable_hr:
                        raise RequestError(
                            REFINER, "the job's own checkpoint cannot refine a hires pass with other LoRAs"
                        )
                    model, family = base_model, base_family
                else:
                    model, family = open_model(file, first_networks if hires is None else hires)
                check_family(REFINER, name, family, joins[1])
                _check_prediction(model, joins[0])
                assert request.refiner_switch_at is not None  # validate() requires it with a refiner
                refiner = Refiner(model, request.refiner_switch_at)
                infotext["Refiner"] = short_title(file)
                infotext["Refiner switch at"] = request.refiner_switch_at
                infotext["Refiner switch by sampling steps"] = True
        yield PassModels(second_pass, refiner, infotext)


def _fixed(model: PassModel) -> Callable[[], AbstractContextManager[PassModel]]:
    def scope() -> AbstractContextManager[PassModel]:
        return nullcontext(model)

    return scope


def _check_prediction(refiner: PassModel, joins: PassModel) -> None:
    """A refiner continues the pass's scheduler: it must predict the same thing (epsilon, v)."""
    mine = refiner.parts.scheduler_config.get("prediction_type", "epsilon")
    theirs = joins.parts.scheduler_config.get("prediction_type", "epsilon")
    if mine != theirs:
        raise RequestError(REFINER, f"the refiner predicts {mine} and the model it follows {theirs}")
