"""The engine: `Engine(config).run(Txt2ImgRequest(prompt="a cat"))` is a complete program.

One run: validate the request, apply styles, resolve seeds (recorded), hold the request's own
checkpoint, encode the prompts once (scheduled, cached), then per batch let the task (txt2img with hires
fix, or img2img/inpaint/outpaint) turn the batch's seeds into pictures, write each picture (with its
infotext) to disk, and only then hand it back.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from webui.core import families, pass_models
from webui.core.config import AppConfig
from webui.core.denoiser_compile import CompileHook, DenoiserCompiler
from webui.core.devices import choose_precision, per_image
from webui.core.downloads.job import check_download, run_download
from webui.core.downloads.request import DownloadRequest
from webui.core.extension_points import NO_HOOKS, EngineHooks, ImageInfo
from webui.core.faces.restorers import FaceRestorers, restore
from webui.core.family_requests import family_params, fit_request
from webui.core.image_memory import check_image_memory, limit_bytes
from webui.core.models.manager import LoadedModel, ModelManager, ModelNotFound
from webui.core.networks.activations import ActivationPlan, lora_hashes, plan_prompt
from webui.core.networks.apply import AppliedInfo, NetworkCache, apply_networks
from webui.core.networks.registry import LoraLibrary
from webui.core.outputs.grid import image_grid
from webui.core.outputs.infotext import format_infotext
from webui.core.outputs.options import BEFORE_FACE_RESTORATION, OutputOptions
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder, ScheduledConditioning, model_key
from webui.core.prompts.embeddings import EmbeddingFolder
from webui.core.prompts.encode import token_widths
from webui.core.prompts.flow_encode import t5_overflow_warnings
from webui.core.prompts.styles import StyleStore
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.catalog import ExtraSampler, SamplerCatalog
from webui.core.sampling.loop import CancelToken, Hook, ModelHook, Stopped
from webui.core.tasks import extras, hires, hires_networks, img2img_batch, sub_pass, txt2img_batch
from webui.core.tasks.context import BatchContext, PassModel
from webui.core.tasks.previews import DEFAULT as DEFAULT_PREVIEW
from webui.core.tasks.previews import PREVIEW_TYPES, Previews
from webui.core.tasks.vae_tiles import VaeTiling
from webui.core.types import (
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    RequestError,
    Txt2ImgRequest,
)

VERSION = "v0.1.0"


@dataclass(frozen=True)
class JobProgress:
    """Progress of a whole run: which batch, which step, and an optional preview image."""

    batch: int
    batches: int
    step: int
    steps: int
    eta: float
    preview: object | None = None  # PIL image
    bytes_done: int = 0  # a download's transfer (see JobProgressInfo)
    bytes_total: int = 0
    speed: float = 0.0


ProgressFn = Callable[[JobProgress], None]
ImageFn = Callable[[GeneratedImage], object]


def infotext_params(
    request: GenerationRequest,
    model: LoadedModel,
    sampler: str,
    schedule: str,
    seed: int,
    subseed: int,
    ti_hashes: str | None = None,
) -> dict[str, object]:
    """The A1111 infotext keys for one image (None values are left out by the formatter)."""
    variation = request.subseed_strength > 0
    resize = request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
    vae = model.vae_file
    return {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Face restoration": request.face_restoration_model if request.restore_faces else None,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.file.shorthash,
        "Model": model.file.model_name.rsplit("/", 1)[-1],
        "VAE hash": vae.shorthash if vae else None,
        "VAE": vae.model_name.rsplit("/", 1)[-1] if vae else None,
        "Variation seed": subseed if variation else None,
        "Variation seed strength": request.subseed_strength if variation else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resize else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "ENSD": request.eta_noise_seed_delta or None,
        "RNG": "CPU",
        "TI hashes": ti_hashes,
        "App": "Sfumato",
        "Version": VERSION,
    }


def _tasks(request: GenerationRequest) -> list[families.Task]:
    """What a request asks of the model's family."""
    if isinstance(request, Img2ImgRequest):
        return ["img2img", "inpaint"] if request.mask is not None else ["img2img"]
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        return ["txt2img", "hires"]
    return ["txt2img"]


@dataclass(frozen=True, kw_only=True)
class _Run:
    request: GenerationRequest
    prompt: str  # with styles applied: what the infotext records and the encoder reads
    negative_prompt: str
    sampler: str  # display names, as recorded in infotext
    schedule: str
    seed: int
    subseed: int
    progress: ProgressFn | None
    cancel: CancelToken | None
    hooks: tuple[Hook, ...]
    model_hooks: tuple[ModelHook, ...]
    preview_every: int
    on_image: ImageFn | None
    networks: ActivationPlan
    samplers: SamplerCatalog
    hires: hires_networks.HiresPlan | None  # the hires pass's own prompts / LoRAs, when it has them
    outputs: OutputOptions  # where and how images are written (the saving settings)
    compiled: CompileHook | None = None  # --compile: the job's compiled-denoiser hook (and its warnings)


R = TypeVar("R", bound=GenerationRequest)


class Engine:
    """Runs requests. `hooks` are the extensions' entry points (see webui.core.extension_points)."""

    def __init__(
        self,
        config: AppConfig,
        manager: ModelManager | None = None,
        hooks: EngineHooks = NO_HOOKS,
        settings: Callable[[str], Any] | None = None,
    ) -> None:
        """`settings` reads a stored setting by key as a run starts (the live preview method); without
        it the defaults apply."""
        self.config = config
        self.settings = settings
        self.previews = Previews(config.models_dir / "VAE-approx")
        self.hooks = hooks
        self.manager = manager or ModelManager(config, choose_precision(config))
        if manager is None:
            self.manager.refresh()
        if self.manager.offloader is not None:  # extension models (ControlNets) follow this worker's moves
            hooks.offload_on(self.manager.precision.device, self.manager.offloader)
        self.encodings = EncodingCache()
        self.embeddings = EmbeddingFolder(config.embeddings_dir, self.manager.hashes)
        self.styles = StyleStore(config.styles_path)
        self.loras = LoraLibrary(config.lora_dirs, config.cache_dir / "hashes.sqlite", hashing=config.hashing)
        self.network_cache = NetworkCache()
        self.faces = FaceRestorers(config.models_dir, self.manager.precision.device)
        self.compiler = DenoiserCompiler(config.cache_dir) if config.compile else None

    def check(self, request: GenerationRequest | extras.ExtrasRequest | DownloadRequest) -> None:
        """RequestError for whatever `run` would refuse before any work (a bad field, an unknown style,
        a template an extension cannot read, a model that is gone): called when a job is submitted, so
        such a request is refused at once rather than failing once its turn comes. Problems extensions
        report are left for the run to report."""
        if isinstance(request, DownloadRequest):
            check_download(request, self.config, self.settings)
            return
        if not isinstance(request, (Txt2ImgRequest, Img2ImgRequest)):
            request.validate(self.samplers)
            if isinstance(request, extras.ExtrasRequest):
                for kind, field in extras.face_restorers(request).items():
                    self.faces.check(kind, field)
            return
        request.validate(self.samplers)
        try:
            self._prepare(request)
        finally:
            self.hooks.take_problems()

    def _prepare(self, request: R) -> tuple[R, str, str]:
        """The request as the extensions hand it on, checked, and its prompts with styles applied."""
        request = self.hooks.request_received(request)
        request.validate(self.samplers)
        limit = self.settings("image_memory_limit_mb") if self.settings is not None else None
        check_image_memory(request, limit_bytes(limit))
        if isinstance(request, Txt2ImgRequest) and request.enable_hr:
            hires.check_upscaler(request.hr_upscaler, self.hooks.image_upscalers())
        prompt, negative = self.styles.apply(request.prompt, request.negative_prompt, request.styles)
        try:
            named = {"checkpoint": self.manager.resolve(request.checkpoint) if request.checkpoint else None}
            named["vae"] = self.manager.resolve_vae(request.vae)
        except ModelNotFound as e:
            raise RequestError("vae" if e.kind == "VAE" else "checkpoint", str(e)) from e
        if request.checkpoint is None or request.checkpoint == "":
            self.manager.resolve(None)  # some checkpoint exists (which one loads is the loader's choice)
        if request.restore_faces:
            self.faces.check(request.face_restoration_model, "restore_faces")
        for field, file in named.items():
            if file is not None and not file.path.exists():
                gone = f"{file.name!r} is no longer in its models folder (deleted or moved); choose another"
                raise RequestError(field, gone)
        pass_models.check(request, self.manager)
        return request, prompt, negative

    def run(
        self,
        request: GenerationRequest | extras.ExtrasRequest | DownloadRequest,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        hooks: Sequence[Hook] = (),
        preview_every: int = 0,
        on_image: ImageFn | None = None,
        model_hooks: Sequence[ModelHook] = (),
        outputs: OutputOptions | None = None,
    ) -> GenerationResult:
        """Make the request's images. `on_image` is called with each image right after it is saved.
        `outputs` says where and how (the saving settings; default: A1111's, under the outputs folder).

        `hooks` are called at every step (BEFORE_STEP, AFTER_CFG, AFTER_STEP), `model_hooks` right
        before every model call (BEFORE_MODEL: they may add model inputs, e.g. ControlNet residuals)."""
        if isinstance(request, extras.ExtrasRequest):
            return self._run_extras(request, progress, cancel, on_image, outputs)
        if isinstance(request, DownloadRequest):
            return self._run_download(request, progress, cancel)
        if not isinstance(request, (Txt2ImgRequest, Img2ImgRequest)):
            raise TypeError(f"cannot run a {type(request).__name__}")
        request, prompt, negative = self._prepare(request)
        samplers = self.samplers
        sampler, schedule = samplers.resolve(request.sampler_name, request.scheduler)
        rng = random.Random()
        seed = noise_mod.resolve_seed(request.seed, rng)
        subseed = noise_mod.resolve_seed(request.subseed, rng)
        tags = "" if request.disable_extra_networks else prompt  # disabled: tags removed, none applied
        networks = plan_prompt(tags, self.loras)  # a bad <lora:x:w> weight fails here, before any work
        if networks.messages:  # a LoRA not found may have been added since the folders were listed
            self.loras.refresh()
            networks = plan_prompt(tags, self.loras)
        hr = hires_networks.plan_hires(request, self.styles, self.loras, networks)
        run = _Run(
            request=request,
            prompt=prompt,
            negative_prompt=negative,
            sampler=sampler,
            schedule=schedule,
            seed=seed,
            subseed=subseed,
            progress=progress,
            cancel=cancel,
            hooks=(*hooks, *self.hooks.step_hooks(request)),
            model_hooks=tuple(model_hooks),
            preview_every=preview_every,
            on_image=on_image,
            networks=networks,
            samplers=samplers,
            hires=hr,
            outputs=outputs or OutputOptions(self.config.outputs_dir),
        )
        with (
            self.manager.acquire(request.checkpoint, request.vae, request.modules) as model,
            apply_networks(model.components, run.networks.networks, self.network_cache) as applied,
            ExitStack() as stack,  # the job's other models (hires checkpoint, refiner)
        ):
            extra = tuple(self.hooks.model_hooks(request, model.components))
            if extra:
                run = dataclasses.replace(run, model_hooks=(*run.model_hooks, *extra))
            if self.compiler is not None:  # last, so it sees the model the other hooks leave in place
                run = self._with_compile(run, model, applied, self.compiler)
            return self._run_batches(run, model, applied, stack)

    def _with_compile(
        self, run: _Run, model: LoadedModel, applied: AppliedInfo, compiler: DenoiserCompiler
    ) -> _Run:
        """The run with --compile's hook; the weights are frozen into the compiled graph unless networks
        (the job's, or its hires pass's) change them during the job."""
        patched = applied.patched or (run.hires is not None and run.hires.networks is not None)
        p = self.manager.precision
        hook = compiler.hook(model.components.denoiser, p.device, p.vram, freeze=not patched)
        return dataclasses.replace(run, model_hooks=(*run.model_hooks, hook), compiled=hook)

    @property
    def samplers(self) -> SamplerCatalog:
        """The samplers requests may name: the built-in ones and the extensions'."""
        specs = self.hooks.samplers().values()
        return SamplerCatalog(tuple(ExtraSampler(s.name, s.make_scheduler, tuple(s.aliases)) for s in specs))

    def upscaler_names(self) -> list[str]:
        """Every name `hr_upscaler` takes: the latent and picture upscalers, then the extensions' ones."""
        return [*hires.UPSCALERS, *self.hooks.image_upscalers()]

    def extras_upscalers(self) -> dict[str, extras.Upscale]:
        """The upscalers Extras offers by name (besides "None"): Lanczos, Nearest, then the extensions'."""
        return extras.picture_upscalers(self.hooks.image_upscalers())

    def _run_download(
        self, request: DownloadRequest, progress: ProgressFn | None, cancel: CancelToken | None
    ) -> GenerationResult:
        """Fetch a model file into its folder (downloads.job); this engine's lists are rescanned after."""

        def refresh() -> None:
            self.manager.refresh()
            self.loras.refresh()

        return run_download(
            request, self.config, self.settings, progress=progress, cancel=cancel, refresh=refresh
        )

    def _run_extras(
        self,
        request: extras.ExtrasRequest,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
        on_image: ImageFn | None,
        outputs: OutputOptions | None,
    ) -> GenerationResult:
        """Upscale the request's images and restore their faces (no checkpoint is loaded; extension
        upscalers load their own, face restorers are loaded once and kept)."""

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(JobProgress(done, total, 1, 1, 0.0))

        opts = outputs or OutputOptions(self.config.outputs_dir)
        folder = opts.outputs_dir / "extras-images"
        images, interrupted = extras.run(
            request, self.extras_upscalers(), folder, report=report, cancel=cancel, on_image=on_image,
            fmt=opts.samples_format, quality=opts.jpeg_quality, pnginfo=opts.enable_pnginfo,
            faces=self.faces.net,
        )  # fmt: skip
        return GenerationResult(request, tuple(images), "", interrupted=interrupted)

    def _conditioning(
        self, run: _Run, model: LoadedModel, applied: AppliedInfo
    ) -> tuple[PromptEncoder, ScheduledConditioning, ScheduledConditioning, str | None, tuple[str, ...]]:
        """Both prompts over the steps (encoded once per distinct text, cached across jobs), the
        infotext's TI hashes, and a warning for each embedding named in a prompt that does not fit."""
        library = self.embeddings.library()
        f = model.file
        encoder = PromptEncoder(
            model.components,
            (model_key(f.path, f.size, f.mtime_ns), applied.text_encoder_key),
            self.encodings,
            library.loaded,
        )
        steps, skip = run.request.steps, run.request.clip_skip
        cond = encoder.schedule(run.prompt, steps, skip)
        uncond = encoder.schedule(run.negative_prompt, steps, skip, multicond=False)
        used = list(dict.fromkeys(cond.embeddings + uncond.embeddings))
        ti = ", ".join(f"{n}: {library.loaded[n].shorthash}" for n in used) if used else None
        text = f"{run.prompt}\n{run.negative_prompt}"
        warnings = tuple(
            f"embedding {name!r} was not used: {reason}"
            for name, reason in library.unusable(token_widths(model.components)).items()
            if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE)
        )
        for label, prompt in (("prompt", run.prompt), ("negative prompt", run.negative_prompt)):
            warnings += t5_overflow_warnings(model.components, label, prompt)
        return encoder, cond, uncond, ti, warnings

    def _run_batches(
        self, run: _Run, model: LoadedModel, applied: AppliedInfo, stack: ExitStack
    ) -> GenerationResult:
        request = run.request
        img2img = isinstance(request, Img2ImgRequest)
        family = families.of(model.components)
        unsupported = [t for t in _tasks(request) if not family.supports(t)]
        if unsupported:
            runs = ", ".join(family.tasks)
            message = (
                f"the {family.group_label} cannot run {unsupported[0]} (it runs {runs}): pick another model"
            )
            raise RequestError("checkpoint", message)
        sampler, schedule = fit_request(request, family, run.samplers)
        run = dataclasses.replace(run, sampler=sampler, schedule=schedule)
        inputs = (
            img2img_batch.prepare_inputs(request, run.seed, family.latent.size_multiple)
            if isinstance(request, Img2ImgRequest)
            else None
        )
        encoder, cond, uncond, ti_hashes, warnings = self._conditioning(run, model, applied)
        warnings = model.notes + run.networks.messages + applied.messages + warnings
        image_cfg = request.image_cfg_scale if isinstance(request, Img2ImgRequest) else None
        if image_cfg is not None and not family.edit:
            warnings += (
                f"image_cfg_scale ({image_cfg:g}) is for instruct-pix2pix (edit) models: "
                f"the {family.group_label} model ignores it",
            )
        lora_hash_value = lora_hashes(run.networks, self.loras, applied)
        hr_plan = run.hires.networks if run.hires else None
        late: list[str] = [f"hires pass: {m}" for m in run.hires.messages] if run.hires else []
        if hr_plan is not None:
            lora_hash_value = hires_networks.merged_hashes(lora_hash_value, hr_plan, self.loras)
        encoders = pass_models.Encoders(self.encodings, encoder.embeddings, request.clip_skip)
        first = (PassModel(model.components, encoders.encode(model, applied)), applied, run.networks.networks)
        passes = stack.enter_context(
            pass_models.open_pass_models(
                self.manager, request, model, first, hr_plan.networks if hr_plan else None,
                self.network_cache, encoders, late,
            )
        )  # fmt: skip
        kind = "img2img" if img2img else "txt2img"
        opts = run.outputs
        batch_size = (
            request.effective_batch_size if isinstance(request, Img2ImgRequest) else request.batch_size
        )
        images: list[GeneratedImage] = []
        pairs = noise_mod.batch_seeds(
            run.seed, run.subseed, batch_size, request.n_iter, subseed_strength=request.subseed_strength
        )

        def encode(
            prompt: str, negative: str, steps: int
        ) -> tuple[ScheduledConditioning, ScheduledConditioning]:
            skip = request.clip_skip
            return encoder.schedule(prompt, steps, skip), encoder.schedule(
                negative, steps, skip, multicond=False
            )

        def result(interrupted: bool = False, grid: Path | None = None) -> GenerationResult:
            problems = tuple(self.hooks.take_problems())
            problems += tuple(run.compiled.warnings) if run.compiled is not None else ()
            return GenerationResult(
                request,
                tuple(images),
                model.file.title,
                interrupted=interrupted,
                grid_path=grid,
                warnings=warnings + tuple(m for m in late if m not in warnings) + problems,
            )

        for b in range(request.n_iter):
            if run.cancel is not None and run.cancel.interrupted:
                return result(interrupted=True)
            batch = pairs[b * batch_size : (b + 1) * batch_size]
            seeds, subseeds = [p[0] for p in batch], [p[1] for p in batch]
            ctx = BatchContext(
                parts=model.components,
                prompt=run.prompt,
                negative_prompt=run.negative_prompt,
                cond=cond,
                uncond=uncond,
                encode=encode,
                report=self._reporter(run, model, b),
                hooks=run.hooks,
                model_hooks=run.model_hooks,
                cancel=run.cancel,
                preview_every=run.preview_every,
                per_image=per_image(self.config.batch_mode, model.components.device),
                vae_tiling=VaeTiling(self.config.tiled_vae),
                churn=dict(
                    s_churn=request.s_churn,
                    s_tmin=request.s_tmin,
                    s_tmax=request.s_tmax,
                    s_noise=request.s_noise,
                ),
                upscalers=self.hooks.image_upscalers(),
                samplers=run.samplers,
                hr_prompts=(run.hires.prompt, run.hires.negative) if run.hires else None,
                second_pass=passes.second_pass,
                refiner=passes.refiner,
            )
            stopped = False
            if isinstance(request, Img2ImgRequest):
                assert inputs is not None
                size = (inputs.width, inputs.height)
            else:
                size = (request.width, request.height)
            try:
                if isinstance(request, Img2ImgRequest):
                    assert inputs is not None
                    pictures, extra = img2img_batch.make_batch(
                        ctx, request, inputs, b * batch_size, seeds, subseeds
                    )
                else:
                    assert isinstance(request, Txt2ImgRequest)
                    pictures = txt2img_batch.make_batch(ctx, request, seeds, subseeds)
                    hr = hires.infotext_params(request, run.samplers, family.flow_matching)
                    extra = [hr] * len(pictures)
            except Stopped as stop:
                if not stop.interrupted:
                    continue  # skipped: on to the next batch
                if stop.pictures is None:
                    return result(interrupted=True)
                # interrupted by the user: the partly finished pictures are kept, as A1111 does
                stopped, pictures = True, stop.pictures
                extra = stop.params or [{}] * len(pictures)
            f = model.file
            names = frozenset(
                n for n in (request.checkpoint, f.title, f.name, f.model_name, f.shorthash) if n
            )
            prepare = functools.partial(self.hooks.sub_pass_hooks, components=model.components)
            runner = None if stopped else sub_pass.make_sub_pass(ctx, names, prepare)
            keep = request.save_images and opts.samples_save
            before: list[Image.Image] = []  # the copies saved too (A1111's "save before face restoration")
            if request.restore_faces and not stopped:  # as A1111: before the extensions' post-processing
                net = self.faces.net(request.face_restoration_model, "restore_faces")
                before = list(pictures) if opts.copies_before_restoration(request.save_images) else []
                pictures = [restore(p, net, weight=request.code_former_weight) for p in pictures]
            try:
                info = [
                    ImageInfo(run.prompt, run.negative_prompt, seeds[i], subseeds[i], b * batch_size + i)
                    for i in range(len(pictures))
                ]
                pictures = self.hooks.after_decode(request, pictures, runner, info)
            except Stopped as stop:  # interrupted or skipped during an extension's sub-pass
                if not stop.interrupted:
                    continue
                if stop.pictures is None:
                    return result(interrupted=True)
                stopped = True  # the batch's pictures are kept as decoded, without the post-processing
            for i, pil in enumerate(pictures):
                params = infotext_params(
                    request, model, run.sampler, run.schedule, seeds[i], subseeds[i], ti_hashes
                )
                params["Size"] = f"{size[0]}x{size[1]}"
                params.update(family_params(request, model.file.path, model.components, family))
                params["Lora hashes"] = lora_hash_value
                params.update(extra[i])
                params.update(passes.infotext)
                params = {**self.hooks.extra_infotext(request), **params}
                text = format_infotext(run.prompt, run.negative_prompt, params)
                if i < len(before) and opts.send_copy is not None:  # a remote worker: the server writes it
                    opts.send_copy(before[i], seeds[i], text)
                elif i < len(before):  # written first, with the same infotext, as A1111 does
                    opts.save(before[i], f"{kind}-images", seeds[i], text, suffix=BEFORE_FACE_RESTORATION)
                path = opts.save(pil, f"{kind}-images", seeds[i], text) if keep else None
                image = GeneratedImage(pil, seeds[i], subseeds[i], text, path)
                images.append(image)
                self.hooks.after_save(request, image)
                if run.on_image is not None:
                    run.on_image(image)
            if stopped:
                return result(interrupted=True)
        grid = None
        if request.save_images and opts.grid_save and len(images) > 1:
            grid_image = image_grid([i.image for i in images])
            grid = opts.save(grid_image, f"{kind}-grids", images[0].seed, images[0].infotext, grid=True)
        return result(grid=grid)

    def _reporter(self, run: _Run, model: LoadedModel, b: int) -> Callable[[int, int, float, object], None]:
        kind = self.settings("show_progress_type") if self.settings is not None else None
        kind = kind if kind in PREVIEW_TYPES else DEFAULT_PREVIEW

        def report(step: int, total: int, eta: float, latents: object) -> None:
            if run.progress is not None:
                preview = None
                if isinstance(latents, torch.Tensor):
                    preview = self.previews.make(latents, model.components, kind)
                run.progress(JobProgress(b + 1, run.request.n_iter, step, total, eta, preview))

        return report
