"""The "Script" dropdown (A1111's scripts, e.g. X/Y/Z plot) and running a script from a tab.

`build_scripts(ctx, tab)` draws the dropdown ("None" plus every ScriptSpec the extensions register for
the tab) and, per script, a group with its Fields, shown while that script is selected. With a script
selected, Generate hands the tab's request to `spec.run(runner, request, args)`: the runner submits
each image the script asks for as a job of the same user in the fair queue and waits for it
(webui.core.jobs.runner.queue_runner). `run_script` streams the current cell's progress and finally the
script's grid and cells for the gallery.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from webui.ui.extension_sections import (
    _slug,
    host_of,
    picture_upscaler_names,
    render_field,
    rescanned_upscaler_names,
)
from webui.ui.polling import POLL_SECONDS, Frame, decode_preview, output_width, status_html, status_text
from webui.ui.widgets import QUIET

NONE = "None"
SCRIPT_KEY = "_script"
PREFIX = "_script."


@dataclass
class ScriptInputs:
    """The tab's script choice and each script's field controls."""

    specs: dict[str, Any] = field(default_factory=dict)  # script name -> ScriptSpec
    components: dict[str, Any] = field(default_factory=dict)  # "_script" and "_script.<script>.<field>"

    def selected(self, values: Mapping[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        """(spec, {field: value}) for the chosen script, None for "None"; bad values raise
        RequestError naming `script_args.<field>`."""
        from webui.core.types import RequestError

        name = values.get(SCRIPT_KEY)
        if not name or name == NONE:
            return None
        spec = self.specs.get(name)
        if spec is None:
            raise RequestError("script_name", f"unknown script {name!r}; available: {', '.join(self.specs)}")
        args: dict[str, Any] = {}
        for f in spec.fields:
            key = f"{PREFIX}{name}.{f.name}"
            value = values.get(key, f.default)
            if f.kind in ("slider", "number") and isinstance(value, float) and value.is_integer():
                value = int(value) if isinstance(f.default, int) else value
            args[f.name] = f.coerce(value if value is not None else f.default, f"script_args.{f.name}")
        return spec, args


def build_scripts(ctx: Any, tab: str, elem: str | None = None) -> ScriptInputs:
    """The Script dropdown and the selected script's fields (call inside the tab's layout). `tab` picks
    the scripts ("txt2img", "img2img"); `elem` names the elements (the Inpaint tab: "inpaint")."""
    host = host_of(ctx)
    inputs = ScriptInputs()
    scripts = host.scripts() if host is not None and hasattr(host, "scripts") else {}
    inputs.specs = {name: spec for name, (_, spec) in scripts.items() if tab in spec.tabs}
    if not inputs.specs:
        return inputs
    names = [NONE, *inputs.specs]
    elem = elem or tab
    dropdown = gr.Dropdown(names, value=NONE, label="Script", elem_id=f"{elem}_script", min_width=160)
    inputs.components[SCRIPT_KEY] = dropdown
    groups = []
    upscalers = picture_upscaler_names(ctx)  # for "upscaler" fields (SD upscale's)
    for name, spec in inputs.specs.items():
        slug = _slug(name)  # "X/Y/Z plot" -> "x_y_z_plot": ids that do not move when scripts are added
        with gr.Column(visible=False, elem_id=f"{elem}_script_{slug}", variant="panel") as group:
            for f in spec.fields:
                field_id = f"{elem}_script_{slug}_{f.name}"
                if f.kind == "upscaler":  # with a ↻ that lists model files added since start
                    with gr.Row(equal_height=True):
                        component = render_field(f, field_id, upscalers)
                        refresh = gr.Button(
                            "\u21bb", size="sm", min_width=40, scale=0, elem_id=f"{field_id}_refresh"
                        )
                    _wire_upscaler_refresh(ctx, refresh, component)
                else:
                    component = render_field(f, field_id, upscalers)
                inputs.components[f"{PREFIX}{name}.{f.name}"] = component
        groups.append((name, group))

    def show(choice: str) -> Any:
        updates = [gr.update(visible=name == choice) for name, _ in groups]
        return updates[0] if len(updates) == 1 else updates  # Gradio takes one output's value unwrapped

    dropdown.change(
        show, dropdown, [g for _, g in groups], concurrency_limit=None, show_progress="hidden",
        api_visibility="private", queue=False,
    )  # fmt: skip
    return inputs


def _wire_upscaler_refresh(ctx: Any, button: Any, dropdown: Any) -> None:
    def refresh(current: str) -> Any:
        names = ["None", *(n for n in rescanned_upscaler_names(ctx) if n != "None")]
        return gr.update(choices=names, value=current if current in names else "None")

    button.click(refresh, dropdown, dropdown, **QUIET)


class _RecordingQueue:
    """The job queue, remembering the ids of the jobs a script submits (for progress and Interrupt)."""

    def __init__(self, queue: Any, on_submit: Callable[[str], None]) -> None:
        self._queue = queue
        self._on_submit = on_submit
        self.ids: list[str] = []

    def submit(self, request: Any, owner: str) -> Any:
        info = self._queue.submit(request, owner)
        self.ids.append(info.id)
        self._on_submit(info.id)
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def result_frame(result: Any) -> Frame:
    """The gallery frame for what a script returned: its grid first (when it made one), then every cell's
    images, each with its infotext and seed."""
    gallery: list[tuple[Any, str]] = []
    infotexts: list[str] = []
    seeds: list[int] = []
    grid = getattr(result, "grid", None)
    if grid is not None:
        path = getattr(result, "grid_path", None)
        gallery.append((str(path) if isinstance(path, Path) and path.is_file() else grid, "grid"))
        infotexts.append(getattr(result, "infotext", "") or "")
        seeds.append(-1)
        for i, sub in enumerate(getattr(result, "sub_grids", ()) or ()):
            gallery.append((sub, f"grid {i + 1}"))
            infotexts.append(getattr(result, "infotext", "") or "")
            seeds.append(-1)
    cells = getattr(result, "cells", None)
    if cells is None and hasattr(result, "images"):
        cells = (result,)
    shown = bool(getattr(result, "lone_images", True))  # X/Y/Z's "Include sub images"
    captions = tuple(getattr(result, "captions", ()) or ())
    count = 0
    warnings: dict[str, None] = {}  # each message once, in order
    for n, cell in enumerate(cells or ()):
        warnings.update(dict.fromkeys(getattr(cell, "warnings", ()) if cell is not None else ()))
        caption = captions[n] if n < len(captions) and captions[n] else ""
        for image in getattr(cell, "images", ()) if cell is not None else ():
            count += 1
            if not shown:
                continue
            path = getattr(image, "path", None)
            text = f"{caption} (seed {image.seed})" if caption else f"seed {image.seed}"
            gallery.append((str(path) if path else image.image, text))
            infotexts.append(image.infotext)
            seeds.append(image.seed)
    stopped = bool(getattr(result, "interrupted", False))
    text = f"{'Interrupted' if stopped else 'Done'}: {'grid and ' if grid is not None else ''}{count} images"
    status = status_html(text, 1.0, "warn" if stopped else "ok")
    if seeds and seeds[0] == -1:
        seeds[0] = seeds[1] if len(seeds) > 1 else -1
    return Frame(status, None, gallery, infotexts, seeds, done=True, warnings=tuple(warnings))


def run_script(
    ctx: Any, spec: Any, request: Any, args: Mapping[str, Any], user: str
) -> Iterator[tuple[Frame, str | None]]:
    """Run the script in a worker thread; yield (frame, id of the job now running) until it is done."""
    from webui.core.jobs.runner import queue_runner

    queue = ctx.services.queue
    recording = _RecordingQueue(queue, lambda job_id: ctx.remember_job(user, job_id))
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = spec.run(queue_runner(recording, user), request, dict(args))
        except BaseException as e:  # reported in the tab; the jobs it made stay in History
            outcome["error"] = e

    thread = threading.Thread(target=work, name=f"script-{spec.name}", daemon=True)
    thread.start()
    shown: str | None = None
    last: bytes | None = None
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if not recording.ids:
            continue
        job_id = recording.ids[-1]
        info = queue.get(job_id)
        text = f"{spec.name}: image {len(recording.ids)}: {status_text(info)}"
        data = queue.latest_preview(job_id)
        fresh = data is not None and data is not last and not info.state.finished
        preview = decode_preview(data, output_width(info)) if fresh and data is not None else None
        last = data if fresh else last
        frame = Frame(status_html(text, info.progress.fraction, busy=True), preview)
        yield frame, (job_id if job_id != shown else None)
        shown = job_id
    if "error" in outcome:
        e = outcome["error"]
        yield Frame(status_html(f"{spec.name} failed: {e}", 0.0, "error"), done=True), None
        return
    yield result_frame(outcome.get("result")), None
