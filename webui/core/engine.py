"""The engine: `Engine(config).run(Txt2ImgRequest(prompt="a cat"))` is a complete program.

One run: validate the request, resolve seeds (recorded), hold the request's own checkpoint, then per
batch: encode prompts, build a fresh scheduler, draw each image's noise from its own CPU generator,
denoise, decode, write each image (with its infotext) to disk, and only then hand it back.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from webui.core.config import AppConfig
from webui.core.devices import choose_precision
from webui.core.models.manager import LoadedModel, ModelManager, ModelNotFound
from webui.core.outputs.grid import image_grid
from webui.core.outputs.infotext import format_infotext
from webui.core.outputs.saving import image_folder, save_image
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder, ScheduledConditioning, model_key
from webui.core.prompts.embeddings import EmbeddingFolder
from webui.core.prompts.encode import token_widths
from webui.core.prompts.styles import StyleStore
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.loop import CancelToken, Hook, Progress, Stopped
from webui.core.sampling.samplers import make_scheduler, resolve
from webui.core.tasks.images import cheap_preview, decode, to_pil
from webui.core.tasks.txt2img import run_txt2img
from webui.core.types import GeneratedImage, GenerationRequest, GenerationResult, RequestError, Txt2ImgRequest

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


ProgressFn = Callable[[JobProgress], None]


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
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.file.shorthash,
        "Model": model.file.model_name.rsplit("/", 1)[-1],
        "VAE hash": vae.shorthash if vae else None,
        "VAE": vae.model_name.rsplit("/", 1)[-1] if vae else None,
        "Variation seed": subseed if variation else None,
        "Variation seed strength": request.subseed_strength if variation else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resize else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
        "TI hashes": ti_hashes,
        "App": "Sfumato",
        "Version": VERSION,
    }


@dataclass(frozen=True)
class _Run:
    request: Txt2ImgRequest
    prompt: str  # with styles applied: what the infotext records and the encoder reads
    negative_prompt: str
    sampler: str  # display names, as recorded in infotext
    schedule: str
    seed: int
    subseed: int
    progress: ProgressFn | None
    cancel: CancelToken | None
    hooks: tuple[Hook, ...]
    preview_every: int


class Engine:
    def __init__(self, config: AppConfig, manager: ModelManager | None = None) -> None:
        self.config = config
        self.manager = manager or ModelManager(config, choose_precision(config))
        if manager is None:
            self.manager.refresh()
        self.encodings = EncodingCache()
        self.embeddings = EmbeddingFolder(config.embeddings_dir, self.manager.hashes)
        self.styles = StyleStore(config.styles_path)

    def run(
        self,
        request: Txt2ImgRequest,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        hooks: Sequence[Hook] = (),
        preview_every: int = 0,
    ) -> GenerationResult:
        request.validate()
        sampler, schedule = resolve(request.sampler_name, request.scheduler)
        prompt, negative = self.styles.apply(request.prompt, request.negative_prompt, request.styles)
        rng = random.Random()
        seed = noise_mod.resolve_seed(request.seed, rng)
        subseed = noise_mod.resolve_seed(request.subseed, rng)
        try:
            self.manager.resolve(request.checkpoint)
            self.manager.resolve_vae(request.vae)
        except ModelNotFound as e:
            raise RequestError("vae" if e.kind == "VAE" else "checkpoint", str(e)) from e
        run = _Run(
            request,
            prompt,
            negative,
            sampler.name,
            schedule,
            seed,
            subseed,
            progress,
            cancel,
            tuple(hooks),
            preview_every,
        )
        with self.manager.acquire(request.checkpoint, request.vae) as model:
            return self._run_batches(run, model)

    def _conditioning(
        self, run: _Run, model: LoadedModel
    ) -> tuple[ScheduledConditioning, ScheduledConditioning, str | None, tuple[str, ...]]:
        """Both prompts over the steps (encoded once per distinct text, cached across jobs), the
        infotext's TI hashes, and a warning for each embedding named in a prompt that does not fit."""
        library = self.embeddings.library()
        f = model.file
        encoder = PromptEncoder(
            model.components, model_key(f.path, f.size, f.mtime_ns), self.encodings, library.loaded
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
        return cond, uncond, ti, warnings

    def _run_batches(self, run: _Run, model: LoadedModel) -> GenerationResult:
        request = run.request
        if model.components.arch == "sdxl-refiner":
            raise RequestError(
                "checkpoint", "the SDXL refiner only refines images (img2img); pick a base model"
            )
        cond, uncond, ti_hashes, warnings = self._conditioning(run, model)
        folder = image_folder(self.config.outputs_dir, "txt2img-images", datetime.date.today())
        images: list[GeneratedImage] = []
        pairs = noise_mod.batch_seeds(
            run.seed,
            run.subseed,
            request.batch_size,
            request.n_iter,
            subseed_strength=request.subseed_strength,
        )
        for b in range(request.n_iter):
            if run.cancel is not None and run.cancel.interrupted:
                return GenerationResult(request, tuple(images), model.file.title, interrupted=True)
            batch = pairs[b * request.batch_size : (b + 1) * request.batch_size]
            seeds, subseeds = [p[0] for p in batch], [p[1] for p in batch]
            try:
                latents = self._sample_batch(run, model, b, seeds, subseeds, cond, uncond)
            except Stopped as stop:
                if stop.interrupted:
                    return GenerationResult(request, tuple(images), model.file.title, interrupted=True)
                continue  # skipped: on to the next batch
            vae = model.components.vae
            decoded = torch.cat(
                [decode(vae, latents[i : i + 1]) for i in range(len(seeds))]
            )  # as a single run
            for i, pil in enumerate(to_pil(decoded)):
                params = infotext_params(
                    request, model, run.sampler, run.schedule, seeds[i], subseeds[i], ti_hashes
                )
                text = format_infotext(run.prompt, run.negative_prompt, params)
                path = save_image(pil, folder, seeds[i], text) if request.save_images else None
                images.append(GeneratedImage(pil, seeds[i], subseeds[i], text, path))
        grid = None
        if request.save_images and len(images) > 1:
            grid_dir = image_folder(self.config.outputs_dir, "txt2img-grids", datetime.date.today())
            grid = save_image(
                image_grid([i.image for i in images]), grid_dir, images[0].seed, images[0].infotext
            )
        return GenerationResult(request, tuple(images), model.file.title, grid_path=grid, warnings=warnings)

    def _sample_batch(
        self,
        run: _Run,
        model: LoadedModel,
        b: int,
        seeds: list[int],
        subseeds: list[int],
        cond: ScheduledConditioning,
        uncond: ScheduledConditioning,
    ) -> torch.Tensor:
        """One batch: a fresh scheduler, per-image noise, the loop. Returns final latents."""
        request, parts = run.request, model.components
        sched = make_scheduler(
            request.sampler_name, request.scheduler, parts.scheduler_config, noise_seeds=seeds
        )
        shape = (4, request.height // 8, request.width // 8)
        resize = (request.seed_resize_from_w, request.seed_resize_from_h)
        noise = noise_mod.initial_noise(shape, seeds, subseeds, request.subseed_strength, resize)
        generators = noise_mod.NoiseSource.for_seeds(shape, seeds).generator_list()
        sdxl = parts.arch.startswith("sdxl")

        def on_step(p: Progress) -> None:
            if run.progress is not None:
                preview = cheap_preview(p.latents, sdxl) if p.latents is not None else None
                run.progress(JobProgress(b + 1, request.n_iter, p.step, p.total, p.eta, preview))

        return run_txt2img(
            parts,
            sched,
            noise,
            generators,
            cond,
            uncond,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            width=request.width,
            height=request.height,
            eta=request.eta,
            churn=dict(
                s_churn=request.s_churn, s_tmin=request.s_tmin, s_tmax=request.s_tmax, s_noise=request.s_noise
            ),
            hooks=run.hooks,
            on_progress=on_step,
            cancel=run.cancel,
            preview_every=run.preview_every,
        )
