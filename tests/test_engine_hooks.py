"""The engine calls extensions itself: a good, a raising and a broken extension side by side on real jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps

from tests.test_plugins_host import BROKEN, GOOD, RAISER, load_host, write_extension
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.types import Txt2ImgRequest

SMALL = dict(prompt="a red apple", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1")


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


def _engine(manager: ModelManager, tmp_path: Path, hooks: object = None) -> Engine:
    config = AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "outputs")
    return Engine(config, manager) if hooks is None else Engine(config, manager, hooks)  # type: ignore[arg-type]


def test_extensions_run_inside_the_engine_and_failures_are_reported(
    manager: ModelManager, tmp_path: Path
) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "good", GOOD)
    write_extension(root, "raiser", RAISER)
    write_extension(root, "broken", BROKEN)
    host = load_host(root)
    statuses = {e.name: e.status for e in host.extensions()}
    assert statuses["broken"] == "failed" and statuses["good"] == "loaded" and statuses["raiser"] == "loaded"
    plain = _engine(manager, tmp_path / "plain").run(Txt2ImgRequest(**SMALL))
    request = Txt2ImgRequest(**SMALL, extension_args={"good": {"strength": 1.0, "tag": "hello"}})
    result = _engine(manager, tmp_path / "hooked", host).run(request)
    # the job finished; the raiser's half-done latent change was undone, the good extension inverted
    expected = np.asarray(ImageOps.invert(plain.images[0].image))
    assert np.array_equal(np.asarray(result.images[0].image), expected)
    path = result.images[0].path
    assert path is not None and np.array_equal(np.asarray(_open(path)), expected)  # saved after the hook
    info = parse_infotext(read_infotext(path) or "")
    assert info["Good tag"] == "hello"
    assert any("raiser" in w for w in result.warnings), result.warnings
    assert not any("good" in w for w in result.warnings)


def _open(path: Path):  # type: ignore[no-untyped-def]
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_an_engine_without_extensions_is_unchanged(manager: ModelManager, tmp_path: Path) -> None:
    from webui.core.extension_points import NO_HOOKS

    a = _engine(manager, tmp_path / "a").run(Txt2ImgRequest(**SMALL, save_images=False))
    b = _engine(manager, tmp_path / "b", NO_HOOKS).run(Txt2ImgRequest(**SMALL, save_images=False))
    assert np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))
    assert a.warnings == b.warnings == ()
