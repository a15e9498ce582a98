"""PluginHost: discovery, load statuses, isolation around real Engine runs, args by name.

The helpers at the top write throw-away extensions (real folders with manifests); other plugin tests
import them from here."""

from __future__ import annotations

import textwrap
from pathlib import Path

GOOD = """
from PIL import ImageChops, ImageOps
from webui.plugins.api import Field, HookPoint, UiSection, hookimpl

CALLS = []

@hookimpl
def register(registry):
    registry.add(UiSection("txt2img", "Good effect", fields=(
        Field("strength", "slider", 0.0, minimum=0.0, maximum=1.0),
        Field("tag", "text", "none"),
    )))

@hookimpl
def on_step(point, state):
    CALLS.append((point, state.step))

@hookimpl
def after_decode(images, args):
    return [ImageChops.blend(im, ImageOps.invert(im), args["strength"]) for im in images]

@hookimpl
def extra_infotext(args):
    return {"Good tag": args["tag"]}
"""

RAISER = """
from webui.plugins.api import hookimpl
import torch

CALLS = []

@hookimpl
def on_step(point, state):
    CALLS.append(point)
    state.latents = torch.full_like(state.latents, 1e6)  # half-done change, then a crash
    raise ZeroDivisionError("boom in on_step")

@hookimpl
def after_decode(images):
    raise ValueError("boom in after_decode")
"""

BROKEN = """
import sfumato_module_that_does_not_exist  # noqa
"""


def write_extension(
    root: Path,
    folder: str,
    code: str | None,
    *,
    name: str | None = None,
    api_version: str = "1.0",
    entry: str = "main",
    manifest: bool = True,
) -> Path:
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    if manifest:
        (d / "extension.toml").write_text(
            f'name = "{name or folder}"\nversion = "0.1"\ndescription = "test {folder}"\n'
            f'api_version = "{api_version}"\nentry = "{entry}"\n'
        )
    if code is not None:
        (d / f"{entry}.py").write_text(textwrap.dedent(code))
    return d


# ---- tests -----------------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import ImageOps  # noqa: E402

from webui.core.config import AppConfig  # noqa: E402
from webui.core.engine import Engine  # noqa: E402
from webui.core.extension_points import NO_HOOKS, EngineHooks  # noqa: E402
from webui.core.models.components import Precision  # noqa: E402
from webui.core.models.manager import ModelManager  # noqa: E402
from webui.core.types import GenerationResult, RequestError, Txt2ImgRequest  # noqa: E402
from webui.plugins.a1111 import alwayson_to_extension_args, sdapi_script_info, sdapi_scripts  # noqa: E402
from webui.plugins.discovery import discover  # noqa: E402
from webui.plugins.host import PluginHost  # noqa: E402

SMALL = dict(
    prompt="a red apple", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1", save_images=False
)


def load_host(root: Path, data_dir: Path | None = None, **kw: object) -> PluginHost:
    return PluginHost.load(discover([(root, "user")]), data_dir=data_dir or root.parent, **kw)  # type: ignore[arg-type]


def run_job(
    engine: Engine, host: PluginHost, request: Txt2ImgRequest
) -> tuple[GenerationResult, list, list[str]]:
    """What the engine will do once wired: the hooks around Engine.run."""
    request = host.request_received(request)
    result = engine.run(request, hooks=host.step_hooks(request))
    images = host.after_decode(request, [i.image for i in result.images])
    for image in result.images:
        host.extra_infotext(request)
        host.after_save(request, image)
    return result, images, host.take_problems()


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out"), manager)


@pytest.fixture
def mixed(tmp_path: Path) -> PluginHost:
    root = tmp_path / "extensions"
    write_extension(root, "good", GOOD)
    write_extension(root, "raiser", RAISER)
    write_extension(root, "broken", BROKEN)
    return load_host(root)


def test_statuses_and_stable_order(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    marker = tmp_path / "imported"
    side_effect = f"open({str(marker)!r}, 'w').write('ran')\n"
    for folder in ("zeta", "Alpha", "mid"):
        write_extension(root, folder, "")
    write_extension(root, "future", side_effect, api_version="3.0")
    write_extension(root, "newer_minor", side_effect, api_version="2.9")
    write_extension(root, "plain_folder", None, manifest=False)
    write_extension(root, "broken", BROKEN)
    write_extension(
        root,
        "typo",
        "from webui.plugins.api import hookimpl\n@hookimpl\ndef after_decod(images):\n    pass\n",
    )
    write_extension(root, "zz_dup", "", name="mid")
    host = load_host(root)
    infos = {i.name: i for i in host.extensions()}
    assert [i.name for i in host.extensions()][:3] == [
        "Alpha",
        "broken",
        "future",
    ]  # sorted, case-insensitive
    assert [e.name for e in host.loaded] == ["Alpha", "mid", "zeta"]
    assert infos["future"].status == "incompatible" and "API 3.0" in (infos["future"].error or "")
    assert infos["newer_minor"].status == "incompatible" and "update Sfumato" in (
        infos["newer_minor"].error or ""
    )
    assert not marker.exists(), "an incompatible extension must not be imported"
    assert infos["plain_folder"].status == "invalid" and "extension.toml" in (
        infos["plain_folder"].error or ""
    )
    assert infos["broken"].status == "failed"
    assert "ModuleNotFoundError" in (infos["broken"].error or "") and "main.py:2" in (
        infos["broken"].error or ""
    )
    assert infos["typo"].status == "failed" and "after_decod" in (infos["typo"].error or "")
    assert infos["zz_dup"].status == "invalid" and "duplicate" in (infos["zz_dup"].error or "")
    again = load_host(root)
    assert [i.name for i in again.extensions()] == [i.name for i in host.extensions()]


def test_disabled_extension_is_listed_not_imported(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    marker = tmp_path / "imported"
    write_extension(root, "off", f"open({str(marker)!r}, 'w').write('ran')\n")
    host = load_host(root, disabled=frozenset({"off"}))
    (info,) = host.extensions()
    assert (info.status, info.enabled) == ("disabled", False)
    assert not marker.exists()


def test_broken_and_raising_extensions_do_not_stop_jobs(engine: Engine, mixed: PluginHost) -> None:
    assert isinstance(mixed, EngineHooks)
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    good, raiser = mixed.extension("good").module, mixed.extension("raiser").module
    result, images, problems = run_job(engine, mixed, Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert len(result.images) == 1
    # the raiser's half-done change was undone: the image is the plain run's
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(plain.images[0].image))
    assert len(raiser.CALLS) == 1, "a failed extension is skipped for the rest of the job"
    assert len(good.CALLS) == 3 * SMALL["steps"]
    assert (
        len(problems) == 1
        and "'raiser'" in problems[0]
        and "ZeroDivisionError: boom in on_step" in problems[0]
    )
    assert "main.py" in problems[0]
    assert np.array_equal(np.asarray(images[0]), np.asarray(plain.images[0].image))  # strength default 0
    info = {i.name: i for i in mixed.extensions()}
    assert "boom in on_step" in (info["raiser"].last_job_error or "")
    assert info["broken"].status == "failed"
    # the next job tries the raiser again (it fails again, and again only once)
    run_job(engine, mixed, Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert len(raiser.CALLS) == 2


def test_after_decode_failure_is_reported_and_args_reach_the_hook_by_name(
    engine: Engine, tmp_path: Path
) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "good", GOOD)
    write_extension(root, "raiser", RAISER.replace("def on_step", "def _unused"))
    host = load_host(root)
    req = Txt2ImgRequest(**SMALL, extension_args={"good": {"strength": 1.0, "tag": "hello"}})  # type: ignore[arg-type]
    result, images, problems = run_job(engine, host, req)
    assert np.array_equal(np.asarray(images[0]), np.asarray(ImageOps.invert(result.images[0].image)))
    line = textwrap.dedent(RAISER).splitlines().index('    raise ValueError("boom in after_decode")') + 1
    assert problems == [
        f"extension 'raiser' failed in after_decode: ValueError: boom in after_decode (at main.py:{line} in "
        "after_decode); it was skipped for the rest of this job"
    ]
    assert host.extra_infotext(req) == {"Good tag": "hello"}


def test_step_state_with_a_wrong_shape_is_undone(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    code = (
        "from webui.plugins.api import hookimpl\n@hookimpl\ndef on_step(state):\n"
        "    state.latents = state.latents[:, :2]\n"
    )
    write_extension(root, "shrinker", code)
    host = load_host(root)
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    result, _, problems = run_job(engine, host, Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(plain.images[0].image))
    assert len(problems) == 1 and "state.latents no longer has shape (1, 4, 8, 8)" in problems[0]


def test_request_received_may_replace_the_request_but_not_its_type(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(
        root,
        "a_steps",
        "import dataclasses\nfrom webui.plugins.api import hookimpl\n"
        "@hookimpl\ndef request_received(request):\n"
        "    return dataclasses.replace(request, steps=2, prompt=request.prompt + ', shiny')\n",
    )
    write_extension(
        root,
        "b_wrong",
        "from webui.plugins.api import hookimpl\n@hookimpl\ndef request_received():\n    return 'x'\n",
    )
    host = load_host(root)
    req = host.request_received(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert (req.steps, req.prompt) == (2, "a red apple, shiny")
    assert "b_wrong" in host.take_problems()[0]


def test_extension_args_are_checked_by_name(mixed: PluginHost) -> None:
    with pytest.raises(RequestError) as e:
        mixed.request_received(Txt2ImgRequest(extension_args={"nope": {}}))
    assert e.value.field == "extension_args" and "good" in e.value.message
    with pytest.raises(RequestError) as e:
        mixed.request_received(Txt2ImgRequest(extension_args={"good": {"strength": 3}}))
    assert e.value.field == "extension_args.good.strength"
    with pytest.raises(RequestError) as e:
        mixed.check_extension_args({"good": {"colour": 1}})
    assert e.value.field == "extension_args.good.colour"
    mixed.request_received(Txt2ImgRequest(extension_args={"broken": {"x": 1}}))
    assert "'broken' is not loaded" in mixed.take_problems()[0]


def test_alwayson_scripts_and_sdapi_listings(mixed: PluginHost) -> None:
    by_position = alwayson_to_extension_args(mixed, {"Good Effect": {"args": [0.25, "t"]}})
    assert by_position == {"good": {"strength": 0.25, "tag": "t"}}
    assert alwayson_to_extension_args(mixed, {"GOOD": {"args": {"tag": "x"}}}) == {"good": {"tag": "x"}}
    with pytest.raises(RequestError) as e:
        alwayson_to_extension_args(mixed, {"good": {"args": [0.1, "a", "extra"]}})
    assert e.value.field == "alwayson_scripts.good.args"
    with pytest.raises(RequestError):
        alwayson_to_extension_args(mixed, {"missing script": {"args": []}})
    assert sdapi_scripts(mixed) == {"txt2img": ["good"], "img2img": []}
    (info,) = sdapi_script_info(mixed)
    assert (
        info["name"] == "good"
        and info["is_alwayson"]
        and [a["label"] for a in info["args"]] == ["strength", "tag"]
    )


def test_no_hooks_changes_nothing() -> None:
    req = Txt2ImgRequest(prompt="x")
    assert NO_HOOKS.request_received(req) is req
    assert list(NO_HOOKS.step_hooks(req)) == [] and NO_HOOKS.take_problems() == []


UNITS = """
from webui.plugins.api import Field, RequestError, UiSection, hookimpl

@hookimpl
def register(registry):
    registry.add(UiSection("txt2img", "Units", fields=(
        Field("weight_0", "slider", 1.0, minimum=0.0, maximum=2.0),
        Field("weight_1", "slider", 1.0, minimum=0.0, maximum=2.0),
    )))

@hookimpl
def from_alwayson(script_args):
    if not isinstance(script_args, list):
        return None
    if len(script_args) > 2:
        raise RequestError("args", f"at most 2 units, got {len(script_args)}")
    return {f"weight_{i}": unit.get("weight", 1.0) for i, unit in enumerate(script_args)}
"""


def test_an_extension_may_read_its_own_alwayson_args(tmp_path: Path) -> None:
    write_extension(tmp_path / "extensions", "units", UNITS, api_version="2.0")
    host = load_host(tmp_path / "extensions")
    units = {"units": {"args": [{"weight": 0.5}, {"weight": 2, "module": "canny"}]}}
    assert alwayson_to_extension_args(host, units) == {"units": {"weight_0": 0.5, "weight_1": 2}}
    assert alwayson_to_extension_args(host, {"units": {"args": {"weight_1": 0.1}}}) == {
        "units": {"weight_1": 0.1}
    }  # None from the hook: the default mapping
    with pytest.raises(RequestError) as e:
        alwayson_to_extension_args(host, {"units": {"args": [{}, {}, {}]}})
    assert e.value.field == "alwayson_scripts.units.args" and "at most 2 units" in e.value.message
    with pytest.raises(RequestError) as e:
        alwayson_to_extension_args(host, {"units": {"args": [{"weight": 5}]}})
    assert e.value.field == "extension_args.units.weight_0"
    with pytest.raises(RequestError) as e:
        alwayson_to_extension_args(host, {"units": {"args": ["not a unit"]}})
    assert e.value.field == "alwayson_scripts.units" and "AttributeError" in e.value.message
