"""X/Y/Z plot: the Face restore, Refiner checkpoint and Refiner switch at axes (A1111's names and values)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.types import GenerationResult, RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

BASE: dict[str, Any] = dict(
    prompt="a red apple", width=64, height=64, steps=2, seed=11, checkpoint="tiny-sd1", save_images=False
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> PluginHost:
    h = PluginHost.for_config(AppConfig.for_data_dir(tmp_path_factory.mktemp("d")), include_pip=False)
    assert h.extension("xyz_plot").loaded, h.extension("xyz_plot").error
    return h


@pytest.fixture(scope="module")
def engine(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Engine:
    data = tmp_path_factory.mktemp("refiners")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    os.symlink(tiny_files["sd1"], ckpts / "tiny-sd1.safetensors")
    save_single_file(
        build_tiny("sd1", seed=1), ckpts / "tiny-sd1b.safetensors"
    )  # a refiner of the same family
    config = AppConfig.for_data_dir(data, outputs_dir=tmp_path_factory.mktemp("out"))
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


@pytest.fixture(scope="module")
def one_result(engine: Engine) -> GenerationResult:
    return engine.run(Txt2ImgRequest(**BASE))


def _modules(host: PluginHost) -> tuple[Any, Any]:
    plot = host.extension("xyz_plot").module
    return plot, importlib.import_module(f"{plot.__package__}.axes")


def _recorded(host: PluginHost, result: GenerationResult, x: Any, request: Any = None) -> list[Any]:
    plot, _ = _modules(host)
    runs: list[Any] = []

    def runner(r: Any) -> GenerationResult:  # records the cell's request; the picture is not looked at
        runs.append(r)
        return result

    plot.xyz_plot(runner, request or Txt2ImgRequest(**BASE), x)
    return runs


def test_face_restore_axis_reads_a1111_values(host: PluginHost, one_result: GenerationResult) -> None:
    plot, _ = _modules(host)
    runs = _recorded(host, one_result, plot.Axis("Face restore", "False, True, GFPGAN, codeformer"))
    assert [(r.restore_faces, r.face_restoration_model) for r in runs] == [
        (False, "CodeFormer"), (True, "CodeFormer"), (True, "GFPGAN"), (True, "CodeFormer")
    ]  # fmt: skip
    with pytest.raises(RequestError) as e:
        _recorded(host, one_result, plot.Axis("Face restore", "True, maybe"))
    assert e.value.field == "x_values" and "maybe" in str(e.value)


def test_refiner_checkpoint_axis_sets_the_refiner_and_a_switch(
    host: PluginHost, one_result: GenerationResult
) -> None:
    plot, axes = _modules(host)
    runs = _recorded(host, one_result, plot.Axis("Refiner checkpoint", "None, tiny-sd1"))
    assert [(r.refiner, r.refiner_switch_at) for r in runs] == [
        (None, axes.DEFAULT_REFINER_SWITCH), ("tiny-sd1", axes.DEFAULT_REFINER_SWITCH)
    ]  # fmt: skip
    mine = Txt2ImgRequest(**BASE, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.3)
    runs = _recorded(host, one_result, plot.Axis("Refiner checkpoint", "tiny-sd1"), mine)
    assert runs[0].refiner_switch_at == 0.3  # the request's own switch is kept


def test_refiner_switch_axis_needs_a_refiner_and_a_fraction(
    host: PluginHost, one_result: GenerationResult
) -> None:
    plot, _ = _modules(host)
    with pytest.raises(RequestError) as e:
        _recorded(host, one_result, plot.Axis("Refiner switch at", "0.5, 1"))
    assert e.value.field == "x_values" and "refiner" in str(e.value)
    mine = Txt2ImgRequest(**BASE, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.8)
    runs = _recorded(host, one_result, plot.Axis("Refiner switch at", "0.25-0.75 [3]"), mine)
    assert [r.refiner_switch_at for r in runs] == [0.25, 0.5, 0.75]
    with pytest.raises(RequestError) as e:
        _recorded(host, one_result, plot.Axis("Refiner switch at", "0, 0.5"), mine)
    assert e.value.field == "x_values"


@pytest.mark.parametrize("label", ["Face restore", "Refiner checkpoint", "Refiner switch at"])
def test_a1111_axis_indexes_reach_the_new_axes(host: PluginHost, label: str) -> None:
    _, axes = _modules(host)
    assert axes.axis_kind(axes.A1111_TXT2IMG.index(label), Txt2ImgRequest(**BASE), "x_type") == label
    assert label in axes.A1111_IMG2IMG


def test_refiner_axis_runs_for_real(host: PluginHost, engine: Engine) -> None:
    plot, _ = _modules(host)
    request = Txt2ImgRequest(**BASE, refiner_switch_at=0.5)  # the switch the axis's refiner runs with
    result = plot.xyz_plot(engine.run, request, plot.Axis("Refiner checkpoint", "None, tiny-sd1b"))
    assert len(result.cells) == 2 and all(c.images for c in result.cells)
    assert (
        "Refiner" in result.cells[1].images[0].infotext
        and "Refiner" not in result.cells[0].images[0].infotext
    )
