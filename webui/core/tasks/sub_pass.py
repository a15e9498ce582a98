"""A second pass inside a job: img2img/inpaint on the job's loaded model, for after-decode extensions.

A detailer finds faces in the decoded pictures and repaints each one with an inpaint pass; it gets a
`SubPass` (see webui.core.extension_points) made here for the batch it post-processes. The sub-request
runs on the model the job holds (with the job's LoRAs; its own `checkpoint`, `vae` and `modules` are
ignored, and a different checkpoint is refused), its prompts encoded like the job's (styles are not
applied again), with the job's samplers, cancel token and batch mode, but without the job's step and
model hooks (an extension's own sub-pass never re-enters it): its model hooks are only those its own
`extension_args` ask for (`prepare`). Its progress is not reported: it belongs
to the batch being post-processed. No image is saved; the pictures are returned.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from PIL import Image

from webui.core import families
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.loop import ModelHook
from webui.core.tasks import img2img_batch
from webui.core.tasks.context import BatchContext
from webui.core.types import Img2ImgRequest, RequestError

SubPassFn = Callable[[Img2ImgRequest], list[Image.Image]]
PrepareFn = Callable[[Img2ImgRequest], Sequence[ModelHook]]


def make_sub_pass(
    ctx: BatchContext, checkpoint_names: frozenset[str], prepare: PrepareFn | None = None
) -> SubPassFn:
    """The sub-pass for one batch: `ctx` is that batch's context; `checkpoint_names` are the titles and
    names of the job's checkpoint (a sub-request naming another one is refused). `prepare(sub_request)`,
    when given, returns the model hooks of that sub-request alone (EngineHooks.sub_pass_hooks: the
    extensions its `extension_args` name, such as a detailer's ControlNet unit); it may refuse the
    sub-request with RequestError."""

    def run(request: Img2ImgRequest) -> list[Image.Image]:
        if not isinstance(request, Img2ImgRequest):
            raise TypeError(f"a sub-pass runs an Img2ImgRequest, not a {type(request).__name__}")
        if request.checkpoint and request.checkpoint not in checkpoint_names:
            raise RequestError("checkpoint", "a sub-pass runs on the job's own checkpoint; leave it empty")
        request.validate(ctx.samplers)
        family = families.of(ctx.parts)
        if not family.supports("inpaint" if request.mask is not None else "img2img"):
            raise RequestError("checkpoint", f"the {family.group_label} cannot run this sub-pass")
        rng = random.Random()
        seed = noise_mod.resolve_seed(request.seed, rng)
        subseed = noise_mod.resolve_seed(request.subseed, rng, field="subseed")
        inputs = img2img_batch.prepare_inputs(request, seed, family.latent.size_multiple)
        model_hooks = tuple(prepare(request)) if prepare is not None else ()
        cond, uncond = ctx.encode(request.prompt, request.negative_prompt, request.steps)
        sub = dataclasses.replace(
            ctx,
            cond=cond,
            uncond=uncond,
            report=_quiet,
            hooks=(),
            model_hooks=model_hooks,
            hr_prompts=None,
            second_pass=None,
            refiner=None,
        )
        pictures: list[Image.Image] = []
        for b in range(request.n_iter):
            n = request.effective_batch_size
            pairs = noise_mod.batch_seeds(
                seed, subseed, n, request.n_iter, subseed_strength=request.subseed_strength
            )[b * n : (b + 1) * n]
            made, _ = img2img_batch.make_batch(
                sub, request, inputs, b * n, [p[0] for p in pairs], [p[1] for p in pairs]
            )
            pictures.extend(made)
        return pictures

    return run


def _quiet(step: int, total: int, eta: float, latents: object) -> None:
    return None
