"""A1111's "Prompts from file or textbox": one job per non-empty line.

A line is a prompt, or, when it starts with `--`, options in A1111's syntax (shell quoting):

    --prompt "a red apple" --negative_prompt blurry --steps 30 --seed 5 --cfg_scale 6.5
    --sampler_name "Euler a" --width 512 --height 768 --styles "Cinematic, Film" --n_iter 2

`--prompt` and `--negative_prompt` take every word up to the next option. The options are A1111's set
(OPTIONS). Every line is read and checked before the first job runs: an unknown option, a bad value
or a setting we cannot honour (`--tiling true`, `--outpath_samples ...`) is an error naming the line.
A line's prompt is put before ("start") or after ("end") the tab's own prompt, when both have one.

script_args (A1111 1.10's order): [checkbox_iterate, checkbox_iterate_batch, prompt_position,
prompt_txt]. "Iterate seed every line" adds batch size x batch count to the seed after each line;
"Use same random seed for all lines" draws one seed for all lines when the seed is -1 (without
either, a -1 seed is drawn anew for every line). A line's own --seed wins.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from webui.plugins.api import (
    Field,
    GenerationRequest,
    GenerationResult,
    RequestError,
    Runner,
    resolve_seed,
)

from .common import ScriptRun, checked

MAX_LINES = 1000
FIELD = "prompt_txt"

FIELDS = (
    Field("checkbox_iterate", "checkbox", False, label="Iterate seed every line"),
    Field("checkbox_iterate_batch", "checkbox", False, label="Use same random seed for all lines"),
    Field("prompt_position", "radio", "start", label="Insert prompts at the", choices=("start", "end")),
    Field("prompt_txt", "textarea", "", label="List of prompt inputs",
          info='one prompt per line, or options: --prompt "..." --negative_prompt "..." --steps 30 --seed 5'),
)  # fmt: skip


def _bool(value: str) -> bool:
    return value == "true"  # A1111: "true" is true, anything else false


def _refuse_true(why: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        if _bool(value):
            raise ValueError(why)
        return None

    return parse


def _refuse(why: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        raise ValueError(why)

    return parse


# A1111's option -> (request field or None, parser). A None field: accepted and changes nothing here.
OPTIONS: dict[str, tuple[str | None, Callable[[str], Any]]] = {
    "sd_model": ("checkpoint", str),
    "outpath_samples": (None, _refuse("output folders cannot be chosen here")),
    "outpath_grids": (None, _refuse("output folders cannot be chosen here")),
    "prompt_for_display": (None, _refuse("a display prompt different from the real one is not supported")),
    "prompt": ("prompt", str),
    "negative_prompt": ("negative_prompt", str),
    "styles": ("styles", lambda v: tuple(s.strip() for s in v.split(",") if s.strip())),
    "seed": ("seed", int),
    "subseed_strength": ("subseed_strength", float),
    "subseed": ("subseed", int),
    "seed_resize_from_h": ("seed_resize_from_h", int),
    "seed_resize_from_w": ("seed_resize_from_w", int),
    "sampler_index": (None, _refuse("sampler indexes differ between versions; use --sampler_name")),
    "sampler_name": ("sampler_name", str),
    "batch_size": ("batch_size", int),
    "n_iter": ("n_iter", int),
    "steps": ("steps", int),
    "cfg_scale": ("cfg_scale", float),
    "width": ("width", int),
    "height": ("height", int),
    "restore_faces": ("restore_faces", _bool),  # with the request's face_restoration_model
    "tiling": (None, _refuse_true("tiling is not supported")),
    "do_not_save_samples": ("save_images", lambda v: not _bool(v)),
    "do_not_save_grid": (None, _bool),  # this script makes no grid
}
_TEXT = ("prompt", "negative_prompt")


def parse_line(line: str, number: int) -> dict[str, Any]:
    """A line's request fields. RequestError("prompt_txt", "line N: ...") for anything wrong."""
    if not line.startswith("--"):
        return {"prompt": line}
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise RequestError(FIELD, f"line {number}: {e}") from None
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise RequestError(FIELD, f"line {number}: {word!r} is not an option (options start with --)")
        tag = word[2:]
        if tag not in OPTIONS:
            raise RequestError(
                FIELD, f"line {number}: unknown option --{tag}; known: {', '.join('--' + k for k in OPTIONS)}"
            )
        if pos + 1 >= len(words):
            raise RequestError(FIELD, f"line {number}: --{tag} needs a value")
        if tag in _TEXT:  # every word up to the next option
            end = pos + 1
            while end < len(words) and (end == pos + 1 or not words[end].startswith("--")):
                end += 1
            out[tag] = " ".join(words[pos + 1 : end])
            pos = end
            continue
        name, parse = OPTIONS[tag]
        try:
            value = parse(words[pos + 1])
        except ValueError as e:
            detail = str(e) if parse not in (int, float) else f"{words[pos + 1]!r} is not a number"
            raise RequestError(FIELD, f"line {number}: --{tag}: {detail}") from None
        if name is not None:
            out[name] = value
        pos += 2
    return out


def _joined(line: str | None, base: str, at_start: bool) -> str:
    if line and base:
        return f"{line} {base}" if at_start else f"{base} {line}"
    return line if line else base


def plan(request: GenerationRequest, a: Mapping[str, Any], samplers: Any) -> list[GenerationRequest]:
    """Every line's request, checked, with its seed; nothing runs yet."""
    numbered = [(n, line.strip()) for n, line in enumerate(a[FIELD].splitlines(), 1) if line.strip()]
    if not numbered:
        raise RequestError(FIELD, "write at least one prompt (one a line)")
    if len(numbered) > MAX_LINES:
        raise RequestError(FIELD, f"{len(numbered)} lines (limit {MAX_LINES})")
    seed = request.seed
    if (a["checkbox_iterate"] or a["checkbox_iterate_batch"]) and seed == -1:
        seed = resolve_seed(seed)
    at_start = a["prompt_position"] == "start"
    jobs = []
    for number, line in numbered:
        fields = parse_line(line, number)
        fields["prompt"] = _joined(fields.get("prompt"), request.prompt, at_start)
        fields["negative_prompt"] = _joined(fields.get("negative_prompt"), request.negative_prompt, at_start)
        fields.setdefault("seed", seed)
        try:
            job = dataclasses.replace(request, **fields)
            job.validate(samplers)
        except RequestError as e:
            raise RequestError(FIELD, f"line {number}: {e.field}: {e.message}") from None
        except (TypeError, ValueError) as e:
            raise RequestError(FIELD, f"line {number}: {e}") from None
        jobs.append(job)
        if a["checkbox_iterate"] and seed != -1:
            seed += request.batch_size * request.n_iter
    return jobs


def run(runner: Runner, request: GenerationRequest, args: Mapping[str, Any]) -> ScriptRun:
    a = checked(FIELDS, args)
    jobs = plan(request, a, getattr(runner, "samplers", None))
    cells: list[GenerationResult | None] = []
    interrupted = False
    for job in jobs:
        if interrupted:
            cells.append(None)
            continue
        result = runner(job)
        cells.append(result)
        interrupted = result.interrupted
    return ScriptRun(tuple(cells), interrupted=interrupted, captions=tuple(j.prompt for j in jobs))
