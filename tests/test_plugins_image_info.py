"""Plugin API 2 additions for after-decode extensions (the detailer): each image's resolved prompts,
seed and subseed (`image_info`), and the names A1111 clients know an extension by (`a1111_names`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_plugins_host import load_host, write_extension
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.a1111 import alwayson_to_extension_args

RECORDER = """
from webui.plugins.api import Field, UiSection, hookimpl

SEEN = []

@hookimpl
def register(registry):
    registry.add(UiSection("txt2img", "Recorder", fields=(Field("on", "checkbox", False),)))

@hookimpl
def after_decode(images, image_info, request):
    SEEN.append([(i.prompt, i.negative_prompt, i.seed, i.subseed, i.index) for i in image_info])
    assert len(image_info) == len(images)
"""


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


def test_after_decode_gets_each_images_resolved_seed_and_prompts(
    manager: ModelManager, tmp_path: Path
) -> None:
    write_extension(tmp_path / "extensions", "recorder", RECORDER, api_version="2.0")
    host = load_host(tmp_path / "extensions")
    config = AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out")
    engine = Engine(config, manager, host)
    request = Txt2ImgRequest(
        prompt="a red apple", negative_prompt="blur", width=64, height=64, steps=1, seed=-1,
        subseed=40, batch_size=2, n_iter=2, checkpoint="tiny-sd1", save_images=False,
    )  # fmt: skip
    result = engine.run(request)
    seen = host.extension("recorder").module.SEEN  # type: ignore[union-attr]
    assert len(seen) == 2 and not result.warnings, result.warnings
    flat = [row for batch in seen for row in batch]
    assert [row[4] for row in flat] == [0, 1, 2, 3]
    assert [(row[2], row[3]) for row in flat] == [(i.seed, i.subseed) for i in result.images]
    first = flat[0][2]
    assert first >= 0 and [row[2] for row in flat] == [first, first + 1, first + 2, first + 3]
    assert {(row[0], row[1]) for row in flat} == {("a red apple", "blur")}


def test_a1111_names_are_alwayson_keys_and_must_be_names(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    d = write_extension(root, "recorder", RECORDER, api_version="2.0")
    with (d / "extension.toml").open("a") as f:
        f.write('a1111_names = ["RecorderA1111"]\n')
    host = load_host(root)
    assert host.a1111_names("recorder") == ("recorder", "RecorderA1111")
    args = alwayson_to_extension_args(host, {"recordera1111": {"args": [True]}})
    assert args == {"recorder": {"on": True}}
    with pytest.raises(RequestError) as bad:
        alwayson_to_extension_args(host, {"recorderA1111": {"args": [1]}})
    assert bad.value.field == "extension_args.recorder.on"
    (d / "extension.toml").write_text((d / "extension.toml").read_text().replace('"RecorderA1111"', '"a b"'))
    (info,) = load_host(root).extensions()
    assert info.status == "invalid" and "a1111_names" in (info.error or ""), info
