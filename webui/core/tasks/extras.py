"""Extras: "upscale this image" (A1111's Extras tab and `/sdapi/v1/extra-*-image(s)`), as a job.

An `ExtrasRequest` holds one or more images and A1111's upscale settings:

- `resize_mode` 0 "scale by" `upscaling_resize` (the output is round(size x factor)); 1 "scale to"
  `upscaling_resize_w` x `upscaling_resize_h`: scaled so the image covers that box, then centre-cropped
  to exactly that size when `upscaling_crop` (else the covering size is kept).
- `upscaler_1` does the upscale ("None": the image passes through unchanged, as in A1111);
  `upscaler_2` makes a second upscale of the same image that is blended in with
  `extras_upscaler_2_visibility` (0: not used).
- Upscalers are "Lanczos", "Nearest" and whatever extensions register (model upscalers).
- Then face restoration, as A1111 orders it: GFPGAN blended in with `gfpgan_visibility`, then
  CodeFormer (its fidelity `codeformer_weight`: 0 strongest, 1 closest to the input) with
  `codeformer_visibility` (0: not used; see webui.core.faces).

Each output keeps its source's generation parameters (the `parameters` PNG chunk, so PNG Info and
"reuse" still work on an upscale) and records what was done in a `postprocessing` chunk with A1111's
keys ("Postprocess upscale by: 2, Postprocess upscaler: Lanczos"). Saved images go to
outputs/extras-images/NNNNN.png (no date folder and no seed in the name, as A1111).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from PIL import Image

from webui.core.faces import CODEFORMER, GFPGAN
from webui.core.faces.restorers import FaceNet, restore
from webui.core.outputs.saving import read_infotext, save_image
from webui.core.sampling.loop import CancelToken
from webui.core.tasks.hires import IMAGE_UPSCALERS
from webui.core.tasks.input_images import sanitize_image
from webui.core.types import GeneratedImage, RequestError, _finite, _int

Upscale = Callable[[Image.Image, int, int], Image.Image]
NONE: Final = "None"
SCALE_BY, SCALE_TO = 0, 1
MAX_FACTOR: Final = 8.0
MAX_OUTPUT_SIDE: Final = 8192  # a side of any intermediate or final image
MAX_IMAGES: Final = 100  # images in one extras job
POSTPROCESSING_KEY: Final = "postprocessing"
FACE_FIELDS: Final = {GFPGAN: "gfpgan_visibility", CODEFORMER: "codeformer_visibility"}
# (restorer, field naming it) -> its network; raises RequestError naming the field when not installed.
FindFaceNet = Callable[[str, str], FaceNet]


@dataclass(frozen=True)
class ExtrasRequest:
    """Upscale images (see the module docstring); field names as A1111's extras API."""

    images: tuple[Any, ...] = field(default=(), compare=False, hash=False)  # PIL images
    source_infotexts: tuple[str, ...] = ()  # each image's own parameters ("" when none)
    resize_mode: int = SCALE_BY
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = NONE
    upscaler_2: str = NONE
    extras_upscaler_2_visibility: float = 0.0
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    save_images: bool = True

    def __post_init__(self) -> None:
        for name in ("images", "source_infotexts"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_images(cls, images: Any, *, field: str | None = None, **settings: Any) -> ExtrasRequest:
        """A request over these images as they arrived (EXIF orientation, colour modes and size limits
        dealt with as for img2img: see tasks.input_images), each one's own infotext kept for its output.
        A bad image raises RequestError naming `<field>.<i>` (default: `image` for one image, else
        `imageList.<i>`, as A1111's API)."""
        images = tuple(images)
        if field is not None:
            names = [f"{field}.{i}" for i in range(len(images))]
        else:
            names = ["image"] if len(images) == 1 else [f"imageList.{i}" for i in range(len(images))]
        clean, texts = [], []
        for name, im in zip(names, images, strict=True):
            if not isinstance(im, Image.Image):
                raise RequestError(name, "must be an image")
            texts.append(read_infotext(im) or "")
            clean.append(sanitize_image(im, name))
        return cls(images=tuple(clean), source_infotexts=tuple(texts), **settings)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def n_iter(self) -> int:
        return 1

    def validate(self, samplers: object = None) -> None:
        """RequestError for the first bad field (`samplers` is not used: extras sample nothing)."""
        if not isinstance(self.images, tuple) or not self.images:
            raise RequestError("image", "an image to upscale is required")
        if len(self.images) > MAX_IMAGES:
            raise RequestError("imageList", f"holds {len(self.images)} images (limit {MAX_IMAGES} a job)")
        for i, im in enumerate(self.images):
            if not isinstance(im, Image.Image):
                raise RequestError(f"imageList.{i}", "must be an image")
        if self.source_infotexts and len(self.source_infotexts) != len(self.images):
            raise RequestError("source_infotexts", "must have one entry per image")
        if self.resize_mode not in (SCALE_BY, SCALE_TO) or isinstance(self.resize_mode, bool):
            raise RequestError(
                "resize_mode", f"must be 0 (scale by) or 1 (scale to), got {self.resize_mode!r}"
            )
        _finite("upscaling_resize", self.upscaling_resize, 0.1, MAX_FACTOR)
        for name in ("extras_upscaler_2_visibility", *FACE_FIELDS.values(), "codeformer_weight"):
            _finite(name, getattr(self, name), 0.0, 1.0)
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            _int(name, getattr(self, name), 1, MAX_OUTPUT_SIDE)
        for name in ("upscaler_1", "upscaler_2"):
            if not isinstance(getattr(self, name), str):
                raise RequestError(name, "must name an upscaler")
        for name in ("upscaling_crop", "save_images"):
            if not isinstance(getattr(self, name), bool):
                raise RequestError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.upscaler_1 == NONE:
            return
        where = "upscaling_resize" if self.resize_mode == SCALE_BY else "upscaling_resize_w"
        for i, im in enumerate(self.images):
            factor = _factor(self, im.width, im.height)
            w, h = scale_size(self, im.width, im.height)  # before any crop: what the upscaler makes
            if factor > MAX_FACTOR or max(w, h) > MAX_OUTPUT_SIDE:
                raise RequestError(
                    where,
                    f"image {i} ({im.width}x{im.height}) would be upscaled x{factor:.3g} to {w}x{h} "
                    f"(limits: x{MAX_FACTOR:g}, {MAX_OUTPUT_SIDE} pixels a side)",
                )


def check_upscalers(request: ExtrasRequest, available: Mapping[str, Upscale]) -> None:
    """Both upscaler names must be "None" or available; the error lists the valid names."""
    valid = [NONE, *available]
    for name in ("upscaler_1", "upscaler_2"):
        value = getattr(request, name)
        if value != NONE and value not in available:
            raise RequestError(name, f"unknown upscaler {value!r}: valid are {', '.join(valid)}")


def face_restorers(request: ExtrasRequest) -> dict[str, str]:
    """{restorer: its visibility field} for the restorers the request uses, in the order they run."""
    return {kind: name for kind, name in FACE_FIELDS.items() if getattr(request, name) > 0}


def builtin_upscalers() -> dict[str, Upscale]:
    """Hires fix's picture upscalers (Lanczos, Nearest); "None" here means no upscale at all."""

    def resizer(resample: Image.Resampling) -> Upscale:
        return lambda im, w, h: im.resize((w, h), resample=resample)

    return {name: resizer(resample) for name, resample in IMAGE_UPSCALERS.items() if name != NONE}


def picture_upscalers(extension_upscalers: Mapping[str, Upscale]) -> dict[str, Upscale]:
    """The studio's picture upscalers by name (besides "None"): Lanczos, Nearest, then the extensions'
    (what Extras, SD upscale and a Field of kind "upscaler" offer)."""
    return {**builtin_upscalers(), **extension_upscalers}


def _factor(request: ExtrasRequest, width: int, height: int) -> float:
    if request.resize_mode == SCALE_BY:
        return float(request.upscaling_resize)
    return max(request.upscaling_resize_w / width, request.upscaling_resize_h / height)


def scale_size(request: ExtrasRequest, width: int, height: int) -> tuple[int, int]:
    """The size the upscaler makes (before any crop): exactly round(size x factor) (A1111 rounds each
    side down to a multiple of 8 instead)."""
    factor = _factor(request, width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def output_size(request: ExtrasRequest, width: int, height: int) -> tuple[int, int]:
    """The final size of an image of width x height."""
    if request.resize_mode == SCALE_TO and request.upscaling_crop:
        return request.upscaling_resize_w, request.upscaling_resize_h
    return scale_size(request, width, height)


def postprocess_params(request: ExtrasRequest) -> dict[str, object]:
    """A1111's `Postprocess ...`, `GFPGAN visibility`, `CodeFormer ...` keys for this request ({} when
    it does nothing)."""
    out: dict[str, object] = {}
    if request.gfpgan_visibility > 0:
        out["GFPGAN visibility"] = round(request.gfpgan_visibility, 3)
    if request.codeformer_visibility > 0:
        out["CodeFormer visibility"] = round(request.codeformer_visibility, 3)
        out["CodeFormer weight"] = round(request.codeformer_weight, 3)
    if request.upscaler_1 == NONE:
        return out
    faces, out = out, {}
    if request.resize_mode == SCALE_BY:
        out["Postprocess upscale by"] = request.upscaling_resize
    else:
        size = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
        out["Postprocess upscale to"] = size
        if request.upscaling_crop:
            out["Postprocess crop to"] = size
    out["Postprocess upscaler"] = request.upscaler_1
    if request.upscaler_2 != NONE and request.extras_upscaler_2_visibility > 0:
        out["Postprocess upscaler 2"] = request.upscaler_2
        out["Postprocess upscaler 2 visibility"] = request.extras_upscaler_2_visibility
    return {**out, **faces}


def postprocess_text(request: ExtrasRequest) -> str:
    items = postprocess_params(request).items()
    return ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in items)


def restore_faces(request: ExtrasRequest, image: Image.Image, find: FindFaceNet) -> Image.Image:
    """The faces of one (upscaled) image restored by GFPGAN, then CodeFormer, as the request says."""
    for kind, name in face_restorers(request).items():
        weight = request.codeformer_weight if kind == CODEFORMER else 0.5
        image = restore(image, find(kind, name), weight=weight, visibility=getattr(request, name))
    return image


def upscale(request: ExtrasRequest, image: Image.Image, upscalers: Mapping[str, Upscale]) -> Image.Image:
    """One image through the request's upscalers (RGB out)."""
    image = image.convert("RGB")
    if request.upscaler_1 == NONE:
        return image
    w, h = scale_size(request, image.width, image.height)
    out = _exact(upscalers[request.upscaler_1](image, w, h), w, h)
    if request.upscaler_2 != NONE and request.extras_upscaler_2_visibility > 0:
        second = _exact(upscalers[request.upscaler_2](image, w, h), w, h)
        out = Image.blend(out, second, float(request.extras_upscaler_2_visibility))
    if request.resize_mode == SCALE_TO and request.upscaling_crop:
        cw, ch = request.upscaling_resize_w, request.upscaling_resize_h
        cropped = Image.new("RGB", (cw, ch))
        cropped.paste(out, box=(cw // 2 - w // 2, ch // 2 - h // 2))
        out = cropped
    return out


def _exact(image: Image.Image, w: int, h: int) -> Image.Image:
    """An upscaler's output as RGB at exactly w x h (a model's native factor may differ)."""
    image = image.convert("RGB")
    return image if image.size == (w, h) else image.resize((w, h), resample=Image.Resampling.LANCZOS)


def run(
    request: ExtrasRequest,
    upscalers: Mapping[str, Upscale],
    folder: Path,
    *,
    report: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    on_image: Callable[[GeneratedImage], object] | None = None,
    fmt: str = "png",
    quality: int = 80,
    pnginfo: bool = True,
    faces: FindFaceNet | None = None,
) -> tuple[list[GeneratedImage], bool]:
    """Upscale every image (each written to `folder` first when save_images); (images, interrupted).
    `fmt`, `quality` and `pnginfo` are the saving settings (file format, JPEG/WebP quality, whether the
    parameters are embedded).

    A GeneratedImage's `seed` is the image's index in the request (extras have no seeds) and its
    infotext the source's parameters. `faces` finds the face restorers' networks (needed when the
    request restores faces). When `on_image` is given it receives each image, and the returned
    list holds them without their pixels (`image` None), so a long batch never keeps every upscale in
    memory (the job queue's worker has them written to disk by then)."""
    request.validate()
    check_upscalers(request, upscalers)
    restoring = face_restorers(request)
    if restoring and faces is None:
        raise RequestError(next(iter(restoring.values())), "face restoration is not available here")
    for kind, name in restoring.items():
        assert faces is not None
        faces(kind, name)  # loaded (or refused) before the first image
    done: list[GeneratedImage] = []
    n = len(request.images)
    extra = {POSTPROCESSING_KEY: postprocess_text(request)} if postprocess_params(request) else {}
    for i, source in enumerate(request.images):
        if cancel is not None and cancel.interrupted:
            return done, True
        out = upscale(request, source, upscalers)
        if faces is not None and restoring:
            out = restore_faces(request, out, faces)
        if cancel is not None and cancel.take_skip():
            continue  # skip: this image is dropped, the next one goes on
        text = request.source_infotexts[i] if request.source_infotexts else ""
        path = (
            save_image(
                out,
                folder,
                None,
                text if pnginfo else "",
                fmt,
                quality=quality,
                extra_text=extra if pnginfo else {},
            )
            if request.save_images
            else None
        )
        image = GeneratedImage(out, i, -1, text, path)
        if on_image is not None:
            on_image(image)
            image = dataclasses.replace(image, image=None)
        done.append(image)
        if report is not None:
            report(i + 1, n)
    return done, False
