"""Requests and results: frozen dataclasses with A1111's field names, validated in one place.

The UI, the API and the command line all translate their inputs into these objects; `validate()` is
the single place where a bad value becomes a `RequestError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.core import sizes

if TYPE_CHECKING:
    from webui.core.sampling.catalog import SamplerCatalog

MAX_SEED = 2**32 - 1
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 500
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000
MAX_CFG = 100.0
MAX_PROMPT_CHARS = 100_000
MAX_MODULES = 8  # SD3 takes four parts (CLIP-L, CLIP-G, T5, VAE)
# checkpoint names that mean "none" (refiner) or "the first pass's" (hires checkpoint), as A1111 sends them
NO_MODEL = frozenset({"", "None", "none"})
SAME_CHECKPOINT = "Use same checkpoint"


class RequestError(ValueError):
    """A request field has a bad value; `field` names it (A1111's name)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _finite(name: str, value: float, lo: float, hi: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RequestError(name, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo:g} and {hi:g}, got {value:g}")


def _int(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(name, f"must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(name, f"must be between {lo} and {hi}, got {value}")


@dataclass(frozen=True)
class GenerationRequest:
    """Fields shared by every kind of generation (A1111's StableDiffusionProcessing)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    distilled_cfg_scale: float = 3.5  # Flux dev's guidance input (Forge's "Distilled CFG Scale")
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    eta: float | None = None
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    eta_noise_seed_delta: int = 0  # A1111's ENSD: step noise of ancestral/SDE samplers from seed + delta
    checkpoint: str | None = None  # title, name or hash; None: the default checkpoint
    vae: str | None = None  # None/"Automatic": the checkpoint's own VAE
    modules: tuple[str, ...] = ()  # text encoder / VAE files a split SD3/Flux model takes (Forge's)
    # A1111 1.6's refiner: sampling goes on with this checkpoint (same architecture) from that fraction
    # of the steps (0 < x <= 1; 1 never switches); None/""/"None": no refiner
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    restore_faces: bool = False  # after decode, each face through `face_restoration_model` (webui.core.faces)
    face_restoration_model: str = "CodeFormer"
    code_former_weight: float = 0.5  # CodeFormer's fidelity: 0 strongest restoration, 1 closest to input
    save_images: bool = True
    # A1111's: <lora:...> tags are taken out of the prompt but not applied (no extra network runs)
    disable_extra_networks: bool = False
    extension_args: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def validate(self, samplers: SamplerCatalog | None = None) -> None:
        """Raise RequestError for the first bad field; sampler and schedule names are checked too,
        against `samplers` (default: the built-in ones; the engine's catalog adds the extensions')."""
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise RequestError(name, "must be text")
            if len(text) > MAX_PROMPT_CHARS:
                raise RequestError(name, f"is {len(text)} characters long (limit {MAX_PROMPT_CHARS})")
        for name in ("width", "height"):
            value = getattr(self, name)
            _int(name, value, MIN_SIZE, MAX_SIZE)
            if value % 8:
                raise RequestError(name, f"must be a multiple of 8, got {value}")
        _int("steps", self.steps, 1, MAX_STEPS)
        _int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _int("n_iter", self.n_iter, 1, MAX_N_ITER)
        _finite("cfg_scale", self.cfg_scale, 0.0, MAX_CFG)
        _finite("distilled_cfg_scale", self.distilled_cfg_scale, 0.0, MAX_CFG)
        _int("seed", self.seed, -1, MAX_SEED)
        _int("subseed", self.subseed, -1, MAX_SEED)
        _finite("subseed_strength", self.subseed_strength, 0.0, 1.0)
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            value = getattr(self, name)
            _int(name, value, -1, MAX_SIZE)
            if value > 0 and value % 8:
                raise RequestError(name, f"must be a multiple of 8, got {value}")
        _int("clip_skip", self.clip_skip, 1, 12)
        if not isinstance(self.modules, tuple) or not all(isinstance(m, str) and m for m in self.modules):
            raise RequestError("modules", "must be a list of module file names")
        if len(self.modules) > MAX_MODULES:
            raise RequestError("modules", f"names {len(self.modules)} files (at most {MAX_MODULES})")
        if self.eta is not None:
            _finite("eta", self.eta, 0.0, 10.0)
        _finite("s_noise", self.s_noise, 0.0, 10.0)
        _finite("s_churn", self.s_churn, 0.0, 100.0)
        _int("eta_noise_seed_delta", self.eta_noise_seed_delta, 0, MAX_SEED)
        for name in ("save_images", "restore_faces"):
            if not isinstance(getattr(self, name), bool):
                raise RequestError(name, f"must be true or false, got {getattr(self, name)!r}")
        from webui.core.faces import KINDS

        if self.face_restoration_model not in KINDS:
            raise RequestError(
                "face_restoration_model",
                f"unknown face restorer {self.face_restoration_model!r}: valid are {', '.join(KINDS)}",
            )
        _finite("code_former_weight", self.code_former_weight, 0.0, 1.0)
        self._validate_refiner()
        from webui.core.sampling.catalog import BUILTIN
        from webui.core.sampling.samplers import UnknownSampler

        try:
            name, _ = (samplers or BUILTIN).resolve(self.sampler_name, self.scheduler)
        except UnknownSampler as e:
            raise RequestError(e.field, str(e)) from e
        self._check_adaptive(name)

    def _check_adaptive(self, sampler: str) -> None:
        """A sampler that decides its own steps (DPM adaptive) cannot hand over at a step fraction."""
        from webui.core.sampling.samplers import ADAPTIVE

        if sampler in ADAPTIVE and self.refiner is not None:
            raise RequestError(
                "refiner_checkpoint", f"{sampler} decides its own steps: it cannot switch to a refiner"
            )

    @property
    def refiner(self) -> str | None:
        """The refiner checkpoint's name, or None (A1111's "None" and "" mean no refiner)."""
        name = self.refiner_checkpoint
        return None if name is None or name.strip() in NO_MODEL else name

    def _validate_refiner(self) -> None:
        if self.refiner_checkpoint is not None and not isinstance(self.refiner_checkpoint, str):
            raise RequestError("refiner_checkpoint", "must be a checkpoint title or name")
        if self.refiner_switch_at is not None:
            at = self.refiner_switch_at
            _finite("refiner_switch_at", at, 0.0, 1.0)
            if at == 0 and self.refiner is not None:
                raise RequestError(
                    "refiner_switch_at", "must be above 0 (at 0 choose the refiner as the checkpoint instead)"
                )
        if self.refiner is not None and self.refiner_switch_at is None:
            raise RequestError(
                "refiner_switch_at", "is needed with refiner_checkpoint: the fraction of the steps (0..1]"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Txt2ImgRequest(GenerationRequest):
    """txt2img: noise to image, optionally followed by a hires fix (upscale, then a second img2img pass).

    Hires fields are A1111's; they are checked only when `enable_hr` is set. The second pass runs
    `hr_second_pass_steps` steps (0: `steps`) with `hr_sampler_name`/`hr_scheduler` (None: the first
    pass's), `hr_prompt`/`hr_negative_prompt` ("": the first pass's), `hr_checkpoint_name` (a
    checkpoint of the same family; None, "" or "Use same checkpoint": the first pass's) and
    `denoising_strength`. The target size is `hr_scale` times the base size, or `hr_resize_x` x
    `hr_resize_y` (see webui/core/sizes.py).
    """

    enable_hr: bool = False
    denoising_strength: float = 0.7
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_checkpoint_name: str | None = None

    @property
    def hr_checkpoint(self) -> str | None:
        """The hires pass's own checkpoint name, or None for the first pass's."""
        name = self.hr_checkpoint_name
        if not self.enable_hr or name is None or name.strip() in NO_MODEL or name == SAME_CHECKPOINT:
            return None
        return name

    def validate(self, samplers: SamplerCatalog | None = None) -> None:
        super().validate(samplers)
        if not isinstance(self.enable_hr, bool):
            raise RequestError("enable_hr", f"must be true or false, got {self.enable_hr!r}")
        if not self.enable_hr:
            return
        _finite("denoising_strength", self.denoising_strength, 0.0, 1.0)
        _finite("hr_scale", self.hr_scale, 1.0, MAX_HR_SCALE)
        _int("hr_second_pass_steps", self.hr_second_pass_steps, 0, MAX_STEPS)
        for name in ("hr_resize_x", "hr_resize_y"):
            value = getattr(self, name)
            _int(name, value, 0, MAX_SIZE)
            if 0 < value < MIN_SIZE:
                raise RequestError(name, f"must be 0 (use hr_scale) or at least {MIN_SIZE}, got {value}")
        for name in ("hr_prompt", "hr_negative_prompt"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise RequestError(name, "must be text")
            if len(text) > MAX_PROMPT_CHARS:
                raise RequestError(name, f"is {len(text)} characters long (limit {MAX_PROMPT_CHARS})")
        if self.hr_checkpoint_name is not None and not isinstance(self.hr_checkpoint_name, str):
            raise RequestError("hr_checkpoint_name", "must be a checkpoint title or name")
        self._validate_hires_target(samplers)

    def _validate_hires_target(self, samplers: SamplerCatalog | None) -> None:
        """The upscaler named, the second pass's sampler known, the resulting size within limits."""
        from webui.core.sampling.catalog import BUILTIN
        from webui.core.sampling.samplers import UnknownSampler

        if not isinstance(self.hr_upscaler, str) or not self.hr_upscaler:
            raise RequestError("hr_upscaler", "must name an upscaler")
        try:
            # a name some family runs; whether the model's family runs it is checked once the model is
            # known (family_requests.fit_request), as for the first pass
            hr_name, _ = (samplers or BUILTIN).resolve(*self.hr_sampler(samplers, None))
        except UnknownSampler as e:
            raise RequestError("hr_scheduler" if e.field == "scheduler" else "hr_sampler_name", str(e)) from e
        from webui.core.sampling.samplers import ADAPTIVE

        if hr_name in ADAPTIVE:  # the second pass is an img2img pass
            raise RequestError("hr_sampler_name", f"{hr_name} runs txt2img only: choose a hires sampler")
        target = self.hr_target
        field = "hr_scale" if self.hr_resize_x == 0 and self.hr_resize_y == 0 else "hr_resize_x"
        w, h = target.size
        to_x, to_y = target.upscale_to_x, target.upscale_to_y
        if max(to_x, to_y) > MAX_SIZE:
            raise RequestError(field, f"hires fix would upscale to {to_x}x{to_y} (limit {MAX_SIZE} a side)")
        if min(w, h) < MIN_SIZE:
            raise RequestError(field, f"hires fix would make a {w}x{h} image (at least {MIN_SIZE} a side)")

    @property
    def hr_target(self) -> sizes.HiresTarget:
        """The hires fix's upscale and final size (A1111's rules, see webui/core/sizes.py)."""
        return sizes.hires_target(self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y)

    def hr_sampler(
        self, samplers: SamplerCatalog | None = None, flow: bool | None = False
    ) -> tuple[str, str]:
        """(sampler name, schedule type) of the second pass: the hr_* ones, else the first pass's. When
        only the sampler changes and it cannot run the first pass's schedule type, its own default is used.
        `flow`: for a flow-matching model (True), a diffusion one (False) or either (None: not known yet)."""
        from webui.core.sampling.catalog import BUILTIN
        from webui.core.sampling.samplers import AUTOMATIC, UnknownSampler

        name = self.hr_sampler_name or self.sampler_name
        if self.hr_scheduler:
            return name, self.hr_scheduler
        catalog = samplers or BUILTIN
        try:
            if flow is None:
                catalog.resolve(name, self.scheduler)
            else:
                catalog.resolve_for(flow, name, self.scheduler)
        except UnknownSampler:
            return name, AUTOMATIC
        return name, self.scheduler


_RESIZE_MODES = {
    0: "just resize",
    1: "crop and resize",
    2: "resize and fill",
    3: "just resize (latent upscale)",
}
_FILL_MODES = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
OUTPAINT_DIRECTIONS = sizes.OUTPAINT_DIRECTIONS
OUTPAINT_FILLS = ("edge", "average", "matched")
MAX_INIT_PIXELS = 40_000_000  # an init image or mask larger than this is refused (decompression bombs)
MAX_MASK_BLUR = 256
MAX_HR_SCALE = 8.0


@dataclass(frozen=True)
class Img2ImgRequest(GenerationRequest):
    """img2img, inpainting and outpainting (A1111's img2img fields, UI defaults).

    - `init_images`: one image (used for every image of the batch) or up to `batch_size` images (image i
      of the batch starts from init_images[i]; the batch has as many images as there are init images).
    - `mask` (optional): white = repaint, black = keep; an RGBA mask with transparency uses its alpha.
      It must have the first init image's aspect ratio (it is resized to its size).
    - `resize_mode`: 0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent upscale).
    - `mask_blur` is A1111's shorthand: when given it sets both `mask_blur_x` and `mask_blur_y` and then
      reads None (so `dataclasses.replace` on the x/y fields behaves).
    - `inpainting_fill` (masked content): 0 fill, 1 original, 2 latent noise, 3 latent nothing.
    - `inpaint_full_res` ("only masked"): work on the mask's box (padded by `inpaint_full_res_padding`,
      grown to the width:height ratio) at full resolution, then paste it back.
    - Outpainting (ours): `outpaint_pixels` > 0 extends the canvas by that many pixels on each side in
      `outpaint_directions`, fills the new area (`outpaint_fill`: "edge" stretches the border pixels,
      "average" uses the image's mean colour, "matched" spectrum-shaped noise histogram-matched to the image
      with `outpaint_falloff` and `outpaint_color_variation`, as outpainting mk2; plus `outpaint_noise` x
      seeded noise) and inpaints it; the output has the canvas size (rounded up to a multiple of 8) and
      `width`/`height` are not used.
    - `soft_inpainting` (A1111 1.8's Soft Inpainting, its six settings by A1111's names) and
      `differential_diffusion` use a soft (blurred) mask as a per-pixel strength: see tasks/soft_inpaint.py.
    """

    init_images: tuple[Any, ...] = field(default=(), compare=False, hash=False)  # PIL images
    mask: Any = field(default=None, compare=False, hash=False)  # PIL image or None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 1
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = 1.0
    outpaint_pixels: int = 0
    outpaint_directions: tuple[str, ...] = OUTPAINT_DIRECTIONS
    outpaint_fill: str = "edge"
    outpaint_noise: float = 0.0
    outpaint_falloff: float = 1.0  # "matched" fill only: the fall-off exponent (lower = more detail)
    outpaint_color_variation: float = 0.05  # "matched" fill only: 0 grey noise .. 1 colour noise
    soft_inpainting: bool = False  # A1111 1.8's Soft Inpainting (the six fields below: its settings)
    mask_blend_power: float = 1.0  # Schedule bias
    mask_blend_scale: float = 0.5  # Preservation strength
    inpaint_detail_preservation: float = 4.0  # Transition contrast boost
    composite_mask_influence: float = 0.0  # Mask influence
    composite_difference_threshold: float = 0.5  # Difference threshold
    composite_difference_contrast: float = 2.0  # Difference contrast
    differential_diffusion: bool = False  # the mask as a per-pixel change map

    def __post_init__(self) -> None:
        if isinstance(self.init_images, list):
            object.__setattr__(self, "init_images", tuple(self.init_images))
        if isinstance(self.outpaint_directions, list):
            object.__setattr__(self, "outpaint_directions", tuple(self.outpaint_directions))
        if self.mask_blur is not None:
            blur = self.mask_blur
            _int("mask_blur", blur, 0, MAX_MASK_BLUR)
            object.__setattr__(self, "mask_blur_x", blur)
            object.__setattr__(self, "mask_blur_y", blur)
            object.__setattr__(self, "mask_blur", None)

    @property
    def effective_batch_size(self) -> int:
        """A1111: one init image serves the whole batch; n > 1 init images make a batch of n."""
        n = len(self.init_images)
        return self.batch_size if n <= 1 else n

    def _check_adaptive(self, sampler: str) -> None:
        from webui.core.sampling.samplers import ADAPTIVE

        if sampler in ADAPTIVE:
            raise RequestError("sampler_name", f"{sampler} runs txt2img only (img2img starts part-way)")
        super()._check_adaptive(sampler)

    def validate(self, samplers: SamplerCatalog | None = None) -> None:
        super().validate(samplers)
        from PIL import Image

        if not isinstance(self.init_images, tuple) or not self.init_images:
            raise RequestError("init_images", "needs at least one image")
        if len(self.init_images) > 1 and len(self.init_images) > self.batch_size:
            raise RequestError(
                "init_images",
                f"{len(self.init_images)} images but batch_size is {self.batch_size}: "
                "send one image, or at most batch_size images",
            )
        for i, image in enumerate(self.init_images):
            _check_image(f"init_images[{i}]", image, Image.Image)
        if self.mask is not None:
            _check_image("mask", self.mask, Image.Image)
            check_mask_size(self.mask.size, self.init_images[0].size)
        _choice("resize_mode", self.resize_mode, _RESIZE_MODES)
        _finite("denoising_strength", self.denoising_strength, 0.0, 1.0)
        if self.image_cfg_scale is not None:
            _finite("image_cfg_scale", self.image_cfg_scale, 0.0, MAX_CFG)
        _int("mask_blur_x", self.mask_blur_x, 0, MAX_MASK_BLUR)
        _int("mask_blur_y", self.mask_blur_y, 0, MAX_MASK_BLUR)
        for name in ("mask_round", "inpaint_full_res"):
            if not isinstance(getattr(self, name), bool):
                raise RequestError(name, f"must be true or false, got {getattr(self, name)!r}")
        _choice("inpainting_fill", self.inpainting_fill, _FILL_MODES)
        _int("inpaint_full_res_padding", self.inpaint_full_res_padding, 0, MAX_SIZE)
        _choice("inpainting_mask_invert", self.inpainting_mask_invert, {0: "masked", 1: "not masked"})
        _finite("initial_noise_multiplier", self.initial_noise_multiplier, 0.0, 2.0)
        self._validate_outpaint()
        self._validate_soft()

    def _validate_soft(self) -> None:
        from webui.core import soft_inpaint_fields as soft

        for name in (soft.ENABLED_FIELD, soft.DIFFERENTIAL_FIELD):
            if not isinstance(getattr(self, name), bool):
                raise RequestError(name, f"must be true or false, got {getattr(self, name)!r}")
        for p in soft.PARAMS:
            _finite(p.field, getattr(self, p.field), p.minimum, p.maximum)
        for name in (soft.ENABLED_FIELD, soft.DIFFERENTIAL_FIELD):
            if getattr(self, name) and self.mask is None and not self.outpaint_pixels:
                raise RequestError(name, "needs an inpainting mask (send `mask`, or outpaint)")
        if self.soft_inpainting and self.differential_diffusion:
            raise RequestError(soft.DIFFERENTIAL_FIELD, "cannot be combined with soft_inpainting: pick one")

    def _validate_outpaint(self) -> None:
        _int("outpaint_pixels", self.outpaint_pixels, 0, MAX_SIZE)
        dirs = self.outpaint_directions
        if not isinstance(dirs, tuple) or any(d not in OUTPAINT_DIRECTIONS for d in dirs):
            raise RequestError(
                "outpaint_directions", f"must be a list of {', '.join(OUTPAINT_DIRECTIONS)}, got {dirs!r}"
            )
        if self.outpaint_fill not in OUTPAINT_FILLS:
            raise RequestError(
                "outpaint_fill", f"must be one of {', '.join(OUTPAINT_FILLS)}, got {self.outpaint_fill!r}"
            )
        _finite("outpaint_noise", self.outpaint_noise, 0.0, 1.0)
        _finite("outpaint_falloff", self.outpaint_falloff, 0.0, 4.0)
        _finite("outpaint_color_variation", self.outpaint_color_variation, 0.0, 1.0)
        if self.outpaint_pixels == 0:
            return
        if not dirs:
            raise RequestError("outpaint_directions", "names no side to extend")
        w, h = self.init_images[0].size
        geo = sizes.canvas_geometry(w, h, self.outpaint_pixels, dirs)
        if max(geo.width, geo.height) > MAX_SIZE:
            raise RequestError(
                "outpaint_pixels",
                f"the extended canvas would be {geo.width}x{geo.height} (limit {MAX_SIZE} a side)",
            )
        if min(geo.width, geo.height) < MIN_SIZE:
            raise RequestError(
                "init_images", f"the canvas would be {geo.width}x{geo.height} (at least {MIN_SIZE} a side)"
            )


def check_mask_size(mask_size: tuple[int, int], image_size: tuple[int, int], field: str = "mask") -> None:
    """Refuse a mask whose aspect ratio differs from the image's by more than a pixel's rounding."""
    if not sizes.mask_fits(mask_size, image_size):
        (mw, mh), (iw, ih) = mask_size, image_size
        raise RequestError(
            field,
            f"is {mw}x{mh} but the image is {iw}x{ih}: a mask must have the image's size or at least "
            "its aspect ratio",
        )


def _choice(name: str, value: int, choices: dict[int, str]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value not in choices:
        listed = ", ".join(f"{k} ({v})" for k, v in choices.items())
        raise RequestError(name, f"must be one of {listed}, got {value!r}")


def _check_image(name: str, image: object, image_type: type) -> None:
    if not isinstance(image, image_type):
        raise RequestError(name, f"must be an image, got {type(image).__name__}")
    w, h = image.size  # type: ignore[attr-defined]
    if w < 1 or h < 1:
        raise RequestError(name, f"is empty ({w}x{h})")
    if w * h > MAX_INIT_PIXELS:
        raise RequestError(name, f"is {w}x{h} = {w * h} pixels (limit {MAX_INIT_PIXELS})")


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None


@dataclass(frozen=True)
class GenerationResult:
    request: Any  # a GenerationRequest, or a tasks.extras.ExtrasRequest for an Extras job
    images: tuple[GeneratedImage, ...]
    model_title: str
    interrupted: bool = False
    grid_path: Path | None = None  # the batch's contact sheet (saved when a run makes several images)
    warnings: tuple[str, ...] = ()  # things the user should know (an embedding that does not fit the model)
    output: dict[str, Any] | None = None  # what a job without images made (a download: its file)

    @property
    def seeds(self) -> list[int]:
        return [i.seed for i in self.images]

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.images if i.path is not None]
