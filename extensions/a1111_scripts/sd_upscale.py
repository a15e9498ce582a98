"""A1111's img2img "SD upscale": enlarge the init image with an upscaler, then redraw it with img2img tile
by tile (each tile the request's width x height, neighbours overlapping by `overlap` pixels), and blend
the tiles back with linear ramps across each overlap, so no seam shows.

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
        info="Upscales by the scale factor; the width and height set each tile's size. "
        "(A1111 clients send its note here; the text is not used.)",
    ),
    Field("overlap", "slider", 64, label="Tile overlap", minimum=0, maximum=256, step=16),
    Field("upscaler_index", "upscaler", NONE, label="Upscaler"),
    Field("scale_factor", "slider", 2.0, label="Scale Factor", minimum=1.0, maximum=4.0, step=0.05),
)  # fmt: skip


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


def run(
    runner: Runner, request: GenerationRequest, args: Mapping[str, Any], outputs_dir: Path | None
) -> ScriptRun:
    if not isinstance(request, Img2ImgRequest):
        raise RequestError("script_name", "SD upscale runs on img2img (it redraws an init image)")
    if request.mask is not None:
        raise RequestError("mask", "SD upscale redraws the whole picture: send no mask")
    a = checked(FIELDS, args, free=("info", "upscaler_index"))
    upscalers: Mapping[str, Callable[[Image.Image, int, int], Image.Image]] = getattr(runner, "upscalers", {})
    upscaler = upscaler_name(a["upscaler_index"], list(upscalers))
    scale = float(a["scale_factor"])
    overlap = int(a["overlap"])
    source = request.init_images[0].convert("RGB")
    if upscaler == NONE:
        picture = source
    else:
        size = (int(source.width * scale), int(source.height * scale))
        if max(size) > MAX_SIDE:
            raise RequestError(
                "scale_factor",
                f"{source.width}x{source.height} x {scale:g} is {size[0]}x{size[1]}: "
                f"over {MAX_SIDE} px a side",
            )
        picture = upscalers[upscaler](source, *size).convert("RGB")
    tw, th = _tile_side(request.width, picture.width), _tile_side(request.height, picture.height)
    if overlap >= min(tw, th):
        raise RequestError("overlap", f"{overlap} px is not smaller than a tile ({tw}x{th})")
    xs, ys = tile_starts(picture.width, tw, overlap), tile_starts(picture.height, th, overlap)
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
        image = blend(tiles, xs, ys, picture.size, overlap)
        infotext = _with_params(infotext, picture.size, overlap, upscaler)
        path = None
        if request.save_images and outputs_dir is not None:
            folder = image_folder(outputs_dir, "img2img-images", datetime.date.today())
            path = save_image(image, folder, seed + n, infotext)
        made = GeneratedImage(image, seed + n, request.subseed, infotext, path)
        cells.append(GenerationResult(request, (made,), "", interrupted=interrupted))
        if interrupted:
            break
    return ScriptRun(
        tuple(cells), infotext=cells[0].images[0].infotext if cells else "", interrupted=interrupted
    )


def _with_params(infotext: str, size: tuple[int, int], overlap: int, upscaler: str) -> str:
    """The tiles' infotext with the whole picture's size and A1111's SD upscale parameters."""
    params: dict[str, object] = dict(parse_infotext(infotext)) if infotext else {}
    prompt, negative = str(params.pop("Prompt", "")), str(params.pop("Negative prompt", ""))
    params.update(
        {"Size": f"{size[0]}x{size[1]}", "SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
    )
    return format_infotext(prompt, negative, params)
