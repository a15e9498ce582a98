"""The X/Y/Z plot extension: value syntax, and a real labelled grid from the tiny model."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

BASE = dict(
    prompt="a red apple",
    negative_prompt="blurry",
    width=64,
    height=64,
    steps=2,
    seed=11,
    checkpoint="tiny-sd1",
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> PluginHost:
    h = PluginHost.for_config(AppConfig.for_data_dir(tmp_path_factory.mktemp("d")), include_pip=False)
    assert h.extension("xyz_plot").loaded, h.extension("xyz_plot").error
    return h


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    config = AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path_factory.mktemp("out"))
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


def plot_module(host: PluginHost):  # type: ignore[no-untyped-def]
    return host.extension("xyz_plot").module


def axes_module(host: PluginHost):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"{plot_module(host).__package__}.axes")


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("Steps", "1-5", [1, 2, 3, 4, 5]),
        ("Steps", "10-1 (-3)", [10, 7, 4, 1]),
        ("Steps", "2, 8-20 (+6)", [2, 8, 14, 20]),
        ("Steps", "1-10 [4]", [1, 4, 7, 10]),
        ("CFG Scale", "5-6 (+0.25)", [5.0, 5.25, 5.5, 5.75, 6.0]),
        ("CFG Scale", "1-2 [3], 7", [1.0, 1.5, 2.0, 7.0]),
        ("Sampler", 'Euler a, "DPM++ 2M"', ["Euler a", "DPM++ 2M"]),
        ("Prompt S/R", "red, green, big blue", [("red", "red"), ("red", "green"), ("red", "big blue")]),
    ],
)
def test_value_syntax(host: PluginHost, kind: str, text: str, expected: list) -> None:
    axes = axes_module(host)
    assert axes.parse_values(kind, text, Txt2ImgRequest(**BASE), "x_values") == expected


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("Steps", "1.5", "whole"),
        ("Steps", "1-5 (-1)", "never reaches"),
        ("Sampler", "Euler, Nope", "Nope"),
        ("Prompt S/R", "purple, green", "not in the prompt"),
        ("Steps", "", "at least one value"),
    ],
)
def test_bad_values_name_the_field(host: PluginHost, kind: str, text: str, message: str) -> None:
    axes = axes_module(host)
    with pytest.raises(RequestError, match=message) as e:
        axes.parse_values(kind, text, Txt2ImgRequest(**BASE), "y_values")
    assert e.value.field == "y_values"


def test_grid_of_real_images_with_labels_and_infotext(host: PluginHost, engine: Engine) -> None:
    plot = plot_module(host)
    runs = []

    def runner(request):  # type: ignore[no-untyped-def]
        runs.append(request)
        return engine.run(request)

    request = Txt2ImgRequest(**{**BASE, "seed": -1})  # type: ignore[arg-type]
    result = plot.xyz_plot(
        runner,
        request,
        plot.Axis("Steps", "2, 3"),
        plot.Axis("Prompt S/R", "red, green"),
        plot.Axis("CFG Scale", "1, 7"),
        outputs_dir=engine.config.outputs_dir,
    )
    assert len(runs) == 8 and len({r.seed for r in runs}) == 1 and runs[0].seed >= 0
    assert [(r.steps, r.prompt, r.cfg_scale) for r in runs[:3]] == [
        (2, "a red apple", 1.0),
        (3, "a red apple", 1.0),
        (2, "a green apple", 1.0),
    ]
    # each z grid: a label band above and a margin left of 2 x 2 cells of 64 px; two z grids side by side
    grid = np.asarray(result.grid)
    assert grid.shape[0] > 128 and grid.shape[1] > 2 * 128
    assert (grid < 128).any(axis=2).sum() > 0
    # the cell (x=3 steps, y=green, z=cfg 7) is exactly the image of that single run
    cell = result.cells[1 * 4 + 1 * 2 + 1]
    assert result.captions[1 * 4 + 1 * 2 + 1] == "Steps: 3, green, CFG Scale: 7"  # the gallery's caption
    assert len(result.captions) == len(result.cells) == 8
    direct = engine.run(
        Txt2ImgRequest(
            **{**BASE, "seed": runs[0].seed, "steps": 3, "prompt": "a green apple", "cfg_scale": 7.0}
        )
    )  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(cell.images[0].image), np.asarray(direct.images[0].image))
    z_width = (grid.shape[1] - 8) // 2
    found = [
        (y, x)
        for y in range(grid.shape[0] - 63)
        for x in (z_width + 8 + z_width - 64,)
        if np.array_equal(grid[y : y + 64, x : x + 64], np.asarray(direct.images[0].image))
    ]
    assert found, "the cell image sits in the bottom-right corner of the second grid"
    assert result.grid_path is not None and "txt2img-grids" in str(result.grid_path)
    saved = parse_infotext(read_infotext(result.grid_path) or "")
    assert saved["Seed"] == str(runs[0].seed) and saved["Steps"] == "2"


def test_registered_as_a_script(host: PluginHost, engine: Engine) -> None:
    ext, spec = host.scripts()["X/Y/Z plot"]
    assert ext == "xyz_plot"
    request = Txt2ImgRequest(**{**BASE, "save_images": False})  # type: ignore[arg-type]
    out = spec.run(engine.run, request, {"x_type": "Seed", "x_values": "1-2", "draw_legend": False})
    assert out.grid.size == (128, 64) and out.grid_path is None
    assert [c.images[0].seed for c in out.cells] == [1, 2]


def test_a_sampler_axis_accepts_the_runners_extension_samplers(
    host: PluginHost, engine: Engine, tmp_path: Path
) -> None:
    from tests.test_plugins_host import load_host, write_extension
    from webui.core.jobs import JobQueue
    from webui.core.jobs.runner import QueueRunner

    root = tmp_path / "extensions"
    write_extension(
        root,
        "mine",
        """
        from webui.plugins.api import SamplerSpec, hookimpl, make_builtin_scheduler

        @hookimpl
        def register(registry):
            registry.add(SamplerSpec("Mine", lambda config: make_builtin_scheduler("Euler", None, config)))
        """,
    )
    hooked = Engine(engine.config, engine.manager, load_host(root))
    runner = QueueRunner(JobQueue(hooked, tmp_path / "jobs.sqlite"), "ann")  # the queue's own engine
    axes = axes_module(host)
    request = Txt2ImgRequest(**BASE)
    assert axes.parse_values("Sampler", "Euler, Mine", request, "x_values", runner.samplers) == [
        "Euler",
        "Mine",
    ]
    with pytest.raises(RequestError, match="Mine"):
        axes.parse_values("Sampler", "Euler, Mine", request, "x_values")  # the built-in list alone
