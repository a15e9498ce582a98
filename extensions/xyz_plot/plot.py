"""X/Y/Z plot: run a request once per combination of up to three axes and lay the images out in a
labelled grid (X columns, Y rows, Z grids side by side), saved with the first cell's infotext.

The seed is fixed once before the first cell (a random one when the request says -1), so only the
axes change between cells. `xyz_plot` takes any runner (Engine.run or a job-queue equivalent), so it is
usable from Python, the UI and the API alike; it is also registered as the selectable script
"X/Y/Z plot" (A1111's `script_name`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from webui.plugins.api import (
    ExtensionContext,
    Field,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    Registry,
    RequestError,
    Runner,
    ScriptSpec,
    hookimpl,
    image_folder,
    resolve_seed,
    save_image,
)

from .axes import AXES, label, parse_values
from .labels import labelled_grid, side_by_side

SCRIPT_NAME = "X/Y/Z plot"
MAX_CELLS = 1000


@dataclass(frozen=True)
class Axis:
    kind: str = "Nothing"
    values: str = ""


@dataclass(frozen=True)
class XYZResult:
    grid: Image.Image
    grid_path: Path | None
    infotext: str
    cells: tuple[GenerationResult | None, ...]  # z-major, then y, then x; None: not run (interrupted)
    interrupted: bool = False
    cell_labels: tuple[str, ...] = ()  # each cell's axis values ("Steps: 10, CFG Scale: 7"), as cells


def xyz_plot(
    runner: Runner,
    request: GenerationRequest,
    x: Axis,
    y: Axis = Axis(),
    z: Axis = Axis(),
    *,
    outputs_dir: Path | None = None,
    draw_legend: bool = True,
) -> XYZResult:
    kinds = [a.kind for a in (x, y, z) if a.kind != "Nothing"]
    if len(kinds) != len(set(kinds)):
        raise RequestError("y_type", "two axes change the same thing; use one axis per setting")
    if "Seed" not in kinds:
        request = dataclasses.replace(request, seed=resolve_seed(request.seed))
    values = [
        parse_values(a.kind, a.values, request, f"{n}_values", getattr(runner, "samplers", None))
        for n, a in zip("xyz", (x, y, z), strict=True)
    ]
    xs, ys, zs = values
    if len(xs) * len(ys) * len(zs) > MAX_CELLS:
        raise RequestError("x_values", f"{len(xs) * len(ys) * len(zs)} images (limit {MAX_CELLS})")
    cells: list[GenerationResult | None] = []
    interrupted = False
    for zv in zs:
        for yv in ys:
            for xv in xs:
                if interrupted:
                    cells.append(None)
                    continue
                cell = AXES[x.kind].apply(AXES[y.kind].apply(AXES[z.kind].apply(request, zv), yv), xv)
                result = runner(cell)
                cells.append(result)
                interrupted = result.interrupted
    first = next((c.images[0] for c in cells if c is not None and c.images), None)
    if first is None:
        raise RuntimeError("the X/Y/Z plot made no image (interrupted before the first cell finished)")
    blank = Image.new("RGB", first.image.size, "black")
    grids = []
    for zi in range(len(zs)):
        rows = []
        for yi in range(len(ys)):
            row = []
            for xi in range(len(xs)):
                result = cells[(zi * len(ys) + yi) * len(xs) + xi]
                row.append(result.images[0].image if result is not None and result.images else blank)
            rows.append(row)
        col_labels = [label(x.kind, v) for v in xs] if draw_legend else []
        row_labels = [label(y.kind, v) for v in ys] if draw_legend else []
        grids.append(labelled_grid(rows, col_labels, row_labels))
    grid = side_by_side(grids, [label(z.kind, v) for v in zs] if draw_legend else [""] * len(zs))
    path = None
    if request.save_images and outputs_dir is not None:
        kind = "img2img-grids" if isinstance(request, Img2ImgRequest) else "txt2img-grids"
        folder = image_folder(outputs_dir, kind, datetime.date.today())
        path = save_image(grid, folder, first.seed, first.infotext)
    cell_labels = tuple(
        ", ".join(t for t in (label(x.kind, xv), label(y.kind, yv), label(z.kind, zv)) if t)
        for zv in zs
        for yv in ys
        for xv in xs
    )
    return XYZResult(grid, path, first.infotext, tuple(cells), interrupted, cell_labels)


def _fields() -> tuple[Field, ...]:
    kinds = tuple(AXES)
    out: list[Field] = []
    for n, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
        out.append(Field(f"{n}_type", "dropdown", default, label=f"{n.upper()} type", choices=kinds))
        out.append(Field(f"{n}_values", "text", "", label=f"{n.upper()} values"))
    out.append(Field("draw_legend", "checkbox", True, label="Draw legend"))
    return tuple(out)


def run_script(
    runner: Runner, request: GenerationRequest, args: Mapping[str, Any], outputs_dir: Path | None
) -> XYZResult:
    defaults = {f.name: f.default for f in _fields()}
    a = {**defaults, **args}
    axes = [Axis(a[f"{n}_type"], a[f"{n}_values"]) for n in "xyz"]
    return xyz_plot(runner, request, *axes, outputs_dir=outputs_dir, draw_legend=a["draw_legend"])


@hookimpl
def register(registry: Registry, context: ExtensionContext) -> None:
    registry.add(
        ScriptSpec(
            SCRIPT_NAME,
            lambda runner, request, args: run_script(runner, request, args, context.outputs_dir),
            _fields(),
        )
    )
