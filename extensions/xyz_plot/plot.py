"""X/Y/Z plot: run a request once per combination of up to three axes and lay the images out in a
labelled grid (X columns, Y rows, Z grids side by side), saved with the first cell's infotext plus
A1111's "Script", "X Type", "X Values", ... keys.

The seed is fixed once before the first cell (a random one when the request says -1), so only the
axes change between cells, unless "Keep -1 for seeds" (`no_fixed_seeds`) is on: then every cell draws
its own. `vary_seeds_x/y/z` add the column / row / grid index to the seed (A1111's "Vary seeds").
`xyz_plot` takes any runner (Engine.run or a job-queue equivalent), so it is usable from Python, the UI
and the API alike; it is also registered as the selectable script "X/Y/Z plot" (A1111's `script_name`)
whose fields are A1111 1.10's `script_args`, in its order.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
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
    format_infotext,
    hookimpl,
    image_folder,
    labelled_grid,
    parse_infotext,
    resolve_seed,
    save_image,
    side_by_side,
)

from .axes import AXES, axis_kind, extension_axis, label, parse_values

SCRIPT_NAME = "X/Y/Z plot"
MAX_CELLS = 1000
MAX_MARGIN = 500


@dataclass(frozen=True)
class Axis:
    kind: str | int = "Nothing"  # a label, or A1111's index for the request's tab
    values: str | list[str] = ""


@dataclass(frozen=True)
class Options:
    draw_legend: bool = True
    include_lone_images: bool = True  # return every cell's image after the grid
    include_sub_grids: bool = False  # with a Z axis: return each Z grid after the whole grid
    no_fixed_seeds: bool = False  # "Keep -1 for seeds"
    vary_seeds: tuple[bool, bool, bool] = (False, False, False)
    margin_size: int = 0


@dataclass(frozen=True)
class XYZResult:
    grid: Image.Image
    grid_path: Path | None
    infotext: str
    cells: tuple[GenerationResult | None, ...]  # z-major, then y, then x; None: not run (interrupted)
    interrupted: bool = False
    captions: tuple[str, ...] = ()  # per cell: its axis values ("Steps: 20, CFG Scale: 7")
    lone_images: bool = True  # whether the cells' images are shown/returned after the grid
    sub_grids: tuple[Image.Image, ...] = ()  # the Z grids, when asked for


def _grid_infotext(
    first: str, axes: Sequence[tuple[str, Axis]], fixed: Sequence[list[Any]], opts: Options
) -> str:
    parsed = parse_infotext(first)
    prompt, negative = parsed.pop("Prompt", ""), parsed.pop("Negative prompt", "")
    extra: dict[str, object] = {"Script": SCRIPT_NAME}
    for (name, axis), values in zip(axes, fixed, strict=True):
        kind = str(axis.kind)
        if kind == "Nothing":
            continue
        extra[f"{name} Type"] = kind
        typed = axis.values if isinstance(axis.values, str) else ", ".join(map(str, axis.values))
        extra[f"{name} Values"] = typed
        if kind in ("Seed", "Var. seed") and not opts.no_fixed_seeds:
            extra[f"Fixed {name} Values"] = ", ".join(map(str, values))
    return format_infotext(prompt, negative, {**parsed, **extra})


def xyz_plot(
    runner: Runner,
    request: GenerationRequest,
    x: Axis,
    y: Axis = Axis(),
    z: Axis = Axis(),
    *,
    outputs_dir: Path | None = None,
    draw_legend: bool = True,
    options: Options | None = None,
) -> XYZResult:
    opts = options or Options(draw_legend=draw_legend)
    ext_fields = getattr(runner, "extension_fields", None)
    axes = [
        Axis(axis_kind(a.kind, request, f"{n}_type", ext_fields), a.values)
        for n, a in zip("xyz", (x, y, z), strict=True)
    ]
    kinds = [str(a.kind) for a in axes if a.kind != "Nothing"]
    if len(kinds) != len(set(kinds)):
        raise RequestError("y_type", "two axes change the same thing; use one axis per setting")
    if not isinstance(opts.margin_size, int) or not 0 <= opts.margin_size <= MAX_MARGIN:
        raise RequestError("margin_size", f"must be 0 to {MAX_MARGIN} pixels, got {opts.margin_size!r}")
    if "Seed" not in kinds and not opts.no_fixed_seeds:
        request = dataclasses.replace(request, seed=resolve_seed(request.seed))
    values = [
        parse_values(
            str(a.kind), a.values, request, f"{n}_values", getattr(runner, "samplers", None),
            fixed_seeds=not opts.no_fixed_seeds, extension_fields=ext_fields,
        )
        for n, a in zip("xyz", axes, strict=True)
    ]  # fmt: skip
    xs, ys, zs = values
    if len(xs) * len(ys) * len(zs) > MAX_CELLS:
        raise RequestError("x_values", f"{len(xs) * len(ys) * len(zs)} images (limit {MAX_CELLS})")
    kx, ky, kz = (str(a.kind) for a in axes)
    apply = [(AXES.get(k) or extension_axis(k, ext_fields)).apply for k in (kx, ky, kz)]  # type: ignore[union-attr]
    cells: list[GenerationResult | None] = []
    captions: list[str] = []
    interrupted = False
    for iz, zv in enumerate(zs):
        for iy, yv in enumerate(ys):
            for ix, xv in enumerate(xs):
                captions.append(", ".join(t for t in (label(kx, xv), label(ky, yv), label(kz, zv)) if t))
                if interrupted:
                    cells.append(None)
                    continue
                cell = apply[0](apply[1](apply[2](request, zv), yv), xv)
                offset = sum(
                    i * step
                    for i, step, on in zip(
                        (ix, iy, iz), (1, len(xs), len(xs) * len(ys)), opts.vary_seeds, strict=True
                    )
                    if on
                )
                if offset and cell.seed != -1:
                    cell = dataclasses.replace(cell, seed=cell.seed + offset)
                result = runner(cell)
                cells.append(result)
                interrupted = result.interrupted
    first = next((c.images[0] for c in cells if c is not None and c.images), None)
    if first is None:
        raise RuntimeError("the X/Y/Z plot made no image (interrupted before the first cell finished)")
    blank = Image.new("RGB", first.image.size, "black")
    grids = []
    legend = opts.draw_legend
    for zi in range(len(zs)):
        rows = []
        for yi in range(len(ys)):
            row = []
            for xi in range(len(xs)):
                done = cells[(zi * len(ys) + yi) * len(xs) + xi]
                row.append(done.images[0].image if done is not None and done.images else blank)
            rows.append(row)
        col_labels = [label(kx, v) for v in xs] if legend else []
        row_labels = [label(ky, v) for v in ys] if legend else []
        grids.append(labelled_grid(rows, col_labels, row_labels, opts.margin_size))
    grid = side_by_side(grids, [label(kz, v) for v in zs] if legend else [""] * len(zs))
    infotext = _grid_infotext(first.infotext, list(zip("XYZ", axes, strict=True)), values, opts)
    path = None
    if request.save_images and outputs_dir is not None:
        kind = "img2img-grids" if isinstance(request, Img2ImgRequest) else "txt2img-grids"
        folder = image_folder(outputs_dir, kind, datetime.date.today())
        path = save_image(grid, folder, first.seed, infotext)
    return XYZResult(
        grid, path, infotext, tuple(cells), interrupted, tuple(captions), opts.include_lone_images,
        tuple(grids) if opts.include_sub_grids and len(zs) > 1 else (),
    )  # fmt: skip


def _fields() -> tuple[Field, ...]:
    """A1111 1.10's X/Y/Z script_args, in its order (its `ui()` return list)."""
    kinds = tuple(AXES)
    out: list[Field] = []
    for n, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
        up = n.upper()
        out.append(Field(f"{n}_type", "dropdown", default, label=f"{up} type", choices=kinds))
        out.append(Field(f"{n}_values", "text", "", label=f"{up} values"))
        out.append(
            Field(
                f"{n}_values_dropdown", "text", "", label=f"{up} values (list)",
                info="A1111's value picker: used instead of the typed values when given",
            )
        )  # fmt: skip
    out += [
        Field("draw_legend", "checkbox", True, label="Draw legend"),
        Field("include_lone_images", "checkbox", False, label="Include sub images"),
        Field("include_sub_grids", "checkbox", False, label="Include sub grids"),
        Field("no_fixed_seeds", "checkbox", False, label="Keep -1 for seeds"),
        Field("vary_seeds_x", "checkbox", False, label="Vary seeds for X"),
        Field("vary_seeds_y", "checkbox", False, label="Vary seeds for Y"),
        Field("vary_seeds_z", "checkbox", False, label="Vary seeds for Z"),
        Field("margin_size", "slider", 0, label="Grid margins (px)", minimum=0, maximum=MAX_MARGIN, step=2),
        Field("csv_mode", "checkbox", False, label="Use text inputs instead of dropdowns"),
    ]
    return tuple(out)


def _flag(a: Mapping[str, Any], name: str) -> bool:
    value = a[name]
    if not isinstance(value, bool):
        raise RequestError(name, f"must be true or false, got {value!r}")
    return value


def _axis_values(a: Mapping[str, Any], n: str) -> str | list[str]:
    typed, listed = a[f"{n}_values"], a[f"{n}_values_dropdown"]
    if not isinstance(typed, str):
        raise RequestError(f"{n}_values", f"must be text, got {type(typed).__name__}")
    if isinstance(listed, list) and listed and not a["csv_mode"]:
        return [str(v) for v in listed]
    if isinstance(listed, str) and listed.strip() and not typed.strip():
        return listed
    return typed


def run_script(
    runner: Runner, request: GenerationRequest, args: Mapping[str, Any], outputs_dir: Path | None
) -> XYZResult:
    defaults = {f.name: f.default for f in _fields()}
    a = {**defaults, **args}
    axes = [Axis(a[f"{n}_type"], _axis_values(a, n)) for n in "xyz"]
    margin = a["margin_size"]
    if isinstance(margin, float) and margin.is_integer():
        margin = int(margin)
    options = Options(
        draw_legend=_flag(a, "draw_legend"),
        include_lone_images=_flag(a, "include_lone_images"),
        include_sub_grids=_flag(a, "include_sub_grids"),
        no_fixed_seeds=_flag(a, "no_fixed_seeds"),
        vary_seeds=(_flag(a, "vary_seeds_x"), _flag(a, "vary_seeds_y"), _flag(a, "vary_seeds_z")),
        margin_size=margin,
    )
    return xyz_plot(runner, request, *axes, outputs_dir=outputs_dir, options=options)


@hookimpl
def register(registry: Registry, context: ExtensionContext) -> None:
    registry.add(
        ScriptSpec(
            SCRIPT_NAME,
            lambda runner, request, args: run_script(runner, request, args, context.outputs_dir),
            _fields(),
        )
    )
