"""A1111's "SD upscale": enlarge a picture with an upscaler, then redraw it with img2img tile by tile
(each tile the request's width x height, neighbours overlapping by `overlap` pixels), and blend the
tiles back with linear ramps across each overlap, so no seam shows.

On img2img the picture is the first init image. On txt2img (issue 17, "the Ultimate SD upscale way")
the job first makes the txt2img pictures as usual (one queued txt2img job, hires fix included when it is
on, saved as txt2img saves them), then redraws each of them exactly as the img2img script redraws an init
image: the txt2img request's prompt, negative prompt, sampler, steps, CFG, checkpoint, each picture's own
seed, tiles of the txt2img width x height, and the request's `denoising_strength` (the hires fix
slider's; 0.7 unless sent: strong for a tiled redraw, 0.2-0.4 keeps the tiles one picture). The result
is the upscaled pictures only, saved in txt2img-images.

script_args (A1111's order): [info, overlap, upscaler_index, scale_factor]. `upscaler_index` is A1111's
index into its upscaler list, or a name (any case): 0 "None" (the image keeps its size, as in A1111:
only the tiles are redrawn), then the studio's picture upscalers as Extras lists them (the runner's
`upscalers`, plugin API 2.4): 1 "Lanczos", 2 "Nearest", then the extensions' (ESRGAN models...). A
runner without `upscalers` (a plain Engine.run) offers only "None".
Every tile uses the request's settings and the same seed (A1111's), with `n_iter` images each from seed
+ n. Where it differs from A1111: only the first init image is used, tiles run one at a time (the
batch size does not batch tiles: the output is the same), and a tile larger than the enlarged picture
shrinks to it (rounded down to a multiple of 8) instead of padding with black.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from webui.plugins.api import (
    Field,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    RequestError,
    Runner,
    Txt2ImgRequest,
    format_infotext,
    image_folder,
    parse_infotext,
    resolve_seed,
    save_image,
)

from .common import ScriptRun, checked

NONE = "None"
MAX_SIDE = 8192  # the enlarged picture's longest side

FIELDS = (
    Field(
        "info", "text", "", label="Note",
        info="Upscales by the scale factor; the width and height set each tile's size. On txt2img the "
        "pictures are made first, then redrawn with the Hires. fix accordion's denoising strength "
        "(0.2-0.4 keeps the tiles one picture). (A1111 clients send its note here; the text is not used.)",
    ),
    Field("overlap", "slider", 64, label="Tile overlap", minimum=0, maximum=256, step=16),
    Field("upscaler_index", "upscaler", NONE, label="Upscaler"),
    Field("scale_factor", "slider", 2.0, label="Scale Factor", minimum=1.0, maximum=4.0, step=0.05),
)  # fmt: skip

Upscale = Callable[[Image.Image, int, int], Image.Image]


@dataclasses.dataclass(frozen=True)
class UpscaleArgs:
    """The script's values, checked: the upscaler's name and function (None for "None"), the scale
    factor and the overlap."""

    upscaler: str
    upscale: Upscale | None
    scale: float
    overlap: int


def upscaler_name(value: Any, upscalers: Sequence[str]) -> str:
    """A1111's index into its upscaler list ("None", then `upscalers`), or a name in any case, as the
    name; RequestError on `upscaler_index` listing the choices with their indices otherwise."""
    names = [NONE, *(n for n in upscalers if n != NONE)]
    listed = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
        raise RequestError("upscaler_index", f"SD upscale offers {listed}; got index {value}")
    if isinstance(value, str):
        for name in names:
            if value.strip().casefold() == name.casefold():
                return name
        raise RequestError("upscaler_index", f"upscaler {value!r} is not available: choose {listed}")
    raise RequestError("upscaler_index", f"must be an upscaler's index or name, got {value!r}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` px start along a side of `length` px, neighbours overlapping by at least
    `overlap` (A1111's split_grid): the first at 0, the last ending at the edge."""
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    count = math.ceil((length - overlap) / step)
    count = max(count, 2)
    span = (length - tile) / (count - 1)
    return [int(i * span) for i in range(count)]


def _ramp(size: int, starts: list[int], index: int, overlap: int) -> np.ndarray:
    """A tile's weight along one axis: rising over `overlap` px from a side that has a neighbour."""
    w = np.ones(size, dtype=np.float32)
    if overlap <= 0:
        return w
    pos = np.arange(size, dtype=np.float32) + 0.5
    if index > 0:
        w = np.minimum(w, pos / overlap)
    if index < len(starts) - 1:
        w = np.minimum(w, (size - pos) / overlap)
    return w


def blend(
    tiles: list[list[Image.Image]], xs: list[int], ys: list[int], size: tuple[int, int], overlap: int
) -> Image.Image:
    """Put the tiles (rows of columns, at `xs` x `ys`) back into one picture of `size`, each overlap a
    weighted mean whose weights ramp linearly across it."""
    width, height = size
    acc = np.zeros((height, width, 3), dtype=np.float32)
    total = np.zeros((height, width, 1), dtype=np.float32)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            tile = np.asarray(tiles[r][c].convert("RGB"), dtype=np.float32)
            th, tw = tile.shape[:2]
            weight = np.outer(_ramp(th, ys, r, overlap), _ramp(tw, xs, c, overlap))[..., None]
            acc[y : y + th, x : x + tw] += tile * weight
            total[y : y + th, x : x + tw] += weight
    out = np.clip(np.rint(acc / total), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _tile_side(request_side: int, picture_side: int) -> int:
    if picture_side >= request_side:
        return request_side
    side = picture_side // 8 * 8
    if side < 8:
        raise RequestError(
            "scale_factor", f"the enlarged picture ({picture_side} px) is smaller than one 8 px tile"
        )
    return side


def _checked_args(runner: Runner, args: Mapping[str, Any]) -> UpscaleArgs:
    a = checked(FIELDS, args, free=("info", "upscaler_index"))
    upscalers: Mapping[str, Upscale] = getattr(runner, "upscalers", {})
    name = upscaler_name(a["upscaler_index"], list(upscalers))
    return UpscaleArgs(name, upscalers.get(name), float(a["scale_factor"]), int(a["overlap"]))


def _layout(
    s: UpscaleArgs, source: tuple[int, int], tile: tuple[int, int]
) -> tuple[tuple[int, int], int, int]:
    """(the enlarged picture's size, tile width, tile height) for a picture of `source` size and tiles of
    `tile` size asked for; RequestError on `scale_factor` or `overlap` when they do not fit."""
    size = source if s.upscale is None else (int(source[0] * s.scale), int(source[1] * s.scale))
    if max(size) > MAX_SIDE:
        raise RequestError(
            "scale_factor",
            f"{source[0]}x{source[1]} x {s.scale:g} is {size[0]}x{size[1]}: over {MAX_SIDE} px a side",
        )
    tw, th = _tile_side(tile[0], size[0]), _tile_side(tile[1], size[1])
    if s.overlap >= min(tw, th):
        raise RequestError("overlap", f"{s.overlap} px is not smaller than a tile ({tw}x{th})")
    return size, tw, th


def run(
    runner: Runner, request: GenerationRequest, args: Mapping[str, Any], outputs_dir: Path | None
) -> ScriptRun:
    if isinstance(request, Txt2ImgRequest):
        return _after_txt2img(runner, request, _checked_args(runner, args), outputs_dir)
    if not isinstance(request, Img2ImgRequest):
        raise RequestError("script_name", "SD upscale runs on txt2img and img2img")
    if request.mask is not None:
        raise RequestError("mask", "SD upscale redraws the whole picture: send no mask")
    return _redraw(runner, request, _checked_args(runner, args), "img2img-images", outputs_dir)


def _redraw(
    runner: Runner, request: Img2ImgRequest, s: UpscaleArgs, kind: str, outputs_dir: Path | None
) -> ScriptRun:
    """Enlarge the first init image, redraw it tile by tile `n_iter` times (seed + n), save each result
    in outputs/`kind` when the request saves images."""
    source = request.init_images[0].convert("RGB")
    size, tw, th = _layout(s, source.size, (request.width, request.height))
    picture = source if s.upscale is None else s.upscale(source, *size).convert("RGB")
    xs, ys = tile_starts(picture.width, tw, s.overlap), tile_starts(picture.height, th, s.overlap)
    seed = resolve_seed(request.seed)
    cells: list[GenerationResult] = []
    interrupted = False
    for n in range(request.n_iter):
        tiles = [[picture.crop((x, y, x + tw, y + th)) for x in xs] for y in ys]
        infotext = ""
        for r in range(len(ys)):
            for c in range(len(xs)):
                if interrupted:
                    break
                job = dataclasses.replace(
                    request, init_images=(tiles[r][c],), width=tw, height=th, seed=seed + n, batch_size=1,
                    n_iter=1, save_images=False, resize_mode=0,
                )  # fmt: skip
                result = runner(job)
                interrupted = result.interrupted
                if result.images:
                    tiles[r][c] = result.images[0].image
                    infotext = infotext or result.images[0].infotext
        image = blend(tiles, xs, ys, picture.size, s.overlap)
        infotext = _with_params(infotext, picture.size, s.overlap, s.upscaler)
        path = None
        if request.save_images and outputs_dir is not None:
            folder = image_folder(outputs_dir, kind, datetime.date.today())
            path = save_image(image, folder, seed + n, infotext)
        made = GeneratedImage(image, seed + n, request.subseed, infotext, path)
        cells.append(GenerationResult(request, (made,), "", interrupted=interrupted))
        if interrupted:
            break
    return ScriptRun(
        tuple(cells), infotext=cells[0].images[0].infotext if cells else "", interrupted=interrupted
    )


def redraw_request(request: Txt2ImgRequest, image: GeneratedImage) -> Img2ImgRequest:
    """The img2img request that redraws one txt2img picture: every shared field of the txt2img request
    (prompts, sampler, steps, CFG, size = the tile size, checkpoint, extension_args...), the picture's
    own seed and the request's denoising strength; one image, whatever the txt2img batch was."""
    shared = {f.name: getattr(request, f.name) for f in dataclasses.fields(GenerationRequest)}
    shared.update(seed=image.seed, subseed=image.subseed, batch_size=1, n_iter=1)
    return Img2ImgRequest(**shared, init_images=(image.image,), denoising_strength=request.denoising_strength)


def _after_txt2img(
    runner: Runner, request: Txt2ImgRequest, s: UpscaleArgs, outputs_dir: Path | None
) -> ScriptRun:
    """Make the txt2img pictures (one job, as txt2img makes and saves them), then redraw each one as the
    img2img script does. Everything that can be checked is checked before the first job runs."""
    made = request.hr_target.size if request.enable_hr else (request.width, request.height)
    _layout(s, made, (request.width, request.height))
    probe = GeneratedImage(Image.new("RGB", made), max(request.seed, 0), max(request.subseed, 0), "")
    redraw_request(request, probe).validate(getattr(runner, "samplers", None))
    first = runner(request)
    if first.interrupted or not first.images:  # stopped: what the first pass made, not upscaled
        text = first.images[0].infotext if first.images else ""
        return ScriptRun((first,), infotext=text, interrupted=first.interrupted)
    cells: list[GenerationResult | None] = []
    interrupted = False
    for image in first.images:
        done = _redraw(runner, redraw_request(request, image), s, "txt2img-images", outputs_dir)
        cells.extend(done.cells)
        interrupted = done.interrupted
        if interrupted:
            break
    shown = next((c.images[0].infotext for c in cells if c is not None and c.images), "")
    return ScriptRun(tuple(cells), infotext=shown, interrupted=interrupted)


def _with_params(infotext: str, size: tuple[int, int], overlap: int, upscaler: str) -> str:
    """The tiles' infotext with the whole picture's size and A1111's SD upscale parameters."""
    params: dict[str, object] = dict(parse_infotext(infotext)) if infotext else {}
    prompt, negative = str(params.pop("Prompt", "")), str(params.pop("Negative prompt", ""))
    params.update(
        {"Size": f"{size[0]}x{size[1]}", "SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
    )
    return format_infotext(prompt, negative, params)
