"""A1111's "Prompt matrix": `a cat | red hat | at night` makes every combination of the parts after the
first (4 images here: none, "red hat", "at night", both), one image each, and a grid whose columns
and rows say which parts are on (struck through and grey: off).

script_args (A1111 1.10's order): [put_at_start, different_seeds, prompt_type, variations_delimiter,
margin_size]. `put_at_start` puts the variable parts before the first part; `different_seeds` gives
image i the seed + i (otherwise every image has the same seed); `prompt_type` "negative" makes the
matrix from the negative prompt; `variations_delimiter` joins the parts with ", " (comma) or " "
(space). Combination i has part k+1 when bit k of i is set; the first half of the variable parts
label the columns, the rest the rows (as A1111 lays it out).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from webui.plugins.api import (
    Field,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    RequestError,
    Runner,
    image_folder,
    labelled_grid,
    resolve_seed,
    save_image,
)

from .common import ScriptRun, checked

MAX_PARTS = 9  # variable parts: 2**9 = 512 images
OFF = "~"  # labelled_grid draws a line starting with it grey and struck through

FIELDS = (
    Field("put_at_start", "checkbox", False, label="Put variable parts at start of prompt"),
    Field("different_seeds", "checkbox", False, label="Use different seed for each picture"),
    Field("prompt_type", "radio", "positive", label="Select prompt", choices=("positive", "negative")),
    Field("variations_delimiter", "radio", "comma", label="Select joining char", choices=("comma", "space")),
    Field("margin_size", "slider", 0, label="Grid margins (px)", minimum=0, maximum=500, step=2),
)


def combinations(text: str, put_at_start: bool, delimiter: str) -> list[str]:
    """Every prompt of the matrix, in A1111's order (combination i has part k+1 when bit k is set)."""
    parts = [p.strip().strip(",").strip() for p in text.split("|")]
    base, variable = parts[0], parts[1:]
    out = []
    for i in range(1 << len(variable)):
        chosen = [p for k, p in enumerate(variable) if i & (1 << k)]
        ordered = [*chosen, base] if put_at_start else [base, *chosen]
        out.append(delimiter.join(p for p in ordered if p))
    return out


def _legend(parts: list[str], index: int) -> str:
    return "\n".join(p if index & (1 << k) else f"{OFF}{p}" for k, p in enumerate(parts))


def run(
    runner: Runner, request: GenerationRequest, args: Mapping[str, Any], outputs_dir: Path | None
) -> ScriptRun:
    a = checked(FIELDS, args)
    positive = a["prompt_type"] == "positive"
    text = request.prompt if positive else request.negative_prompt
    variable = [p.strip().strip(",").strip() for p in text.split("|")][1:]
    if not variable:
        which = "prompt" if positive else "negative prompt"
        raise RequestError("prompt_type", f"the {which} has no '|': write the parts to combine as a | b | c")
    if len(variable) > MAX_PARTS:
        raise RequestError(
            "prompt_type",
            f"{len(variable)} variable parts make {2 ** len(variable)} images "
            f"(limit {MAX_PARTS} parts, {2**MAX_PARTS} images)",
        )
    prompts = combinations(text, a["put_at_start"], ", " if a["variations_delimiter"] == "comma" else " ")
    seed = resolve_seed(request.seed)
    cells: list[GenerationResult | None] = []
    interrupted = False
    for i, prompt in enumerate(prompts):
        if interrupted:
            cells.append(None)
            continue
        change: dict[str, Any] = {"prompt": prompt} if positive else {"negative_prompt": prompt}
        cell = dataclasses.replace(
            request, **change, seed=seed + (i if a["different_seeds"] else 0), batch_size=1, n_iter=1
        )
        result = runner(cell)
        cells.append(result)
        interrupted = result.interrupted
    first = next((c.images[0] for c in cells if c is not None and c.images), None)
    if first is None:
        raise RuntimeError("the prompt matrix made no image (interrupted before the first one finished)")
    across = math.ceil(len(variable) / 2)
    horizontal, vertical = variable[:across], variable[across:]
    cols, rows = 1 << len(horizontal), 1 << len(vertical)
    blank = first.image.copy()
    blank.paste((0, 0, 0), (0, 0, *blank.size))
    grid_cells = [
        [
            (lambda c: c.images[0].image if c is not None and c.images else blank)(cells[r * cols + col])
            for col in range(cols)
        ]
        for r in range(rows)
    ]
    col_labels = [_legend(horizontal, c) for c in range(cols)]
    row_labels = [_legend(vertical, r) for r in range(rows)] if vertical else []
    grid = labelled_grid(grid_cells, col_labels, row_labels, int(a["margin_size"]))
    path = None
    if request.save_images and outputs_dir is not None:
        kind = "img2img-grids" if isinstance(request, Img2ImgRequest) else "txt2img-grids"
        path = save_image(
            grid, image_folder(outputs_dir, kind, datetime.date.today()), first.seed, first.infotext
        )
    captions = tuple(
        ", ".join(p for k, p in enumerate(variable) if i & (1 << k)) or "(none)" for i in range(len(prompts))
    )
    return ScriptRun(tuple(cells), grid, path, first.infotext, interrupted, captions)
