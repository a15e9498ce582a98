"""Samplers registered by an extension (SamplerSpec): offered, validated, run by the engine, the queue,
the A1111 API and the studio's dropdowns, and recorded in infotext."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.test_plugins_host import load_host, write_extension
from tests.test_server_harness import Running, running_server
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.sampling.catalog import BUILTIN, ExtraSampler, SamplerCatalog
from webui.core.sampling.samplers import UnknownSampler
from webui.core.types import RequestError, Txt2ImgRequest

# "Euler Twin" builds the built-in Euler scheduler itself (so its images must equal Euler's), and records
# the scheduler config it was given; "Broken" returns something that is not a scheduler.
SAMPLERS = """
from webui.plugins.api import SamplerSpec, hookimpl, make_builtin_scheduler

CALLS = []


def twin(config):
    CALLS.append(dict(config))
    return make_builtin_scheduler("Euler", "Automatic", config)


@hookimpl
def register(registry):
    registry.add(SamplerSpec("Euler Twin", twin, aliases=("k_euler_twin",)))
    registry.add(SamplerSpec("Broken", lambda config: object()))
    registry.add(SamplerSpec("Euler", twin))  # a built-in name: the built-in one wins
"""
SMALL = dict(
    prompt="a red apple", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1", save_images=False
)


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("sampler-ext") / "extensions"
    write_extension(root, "more_samplers", SAMPLERS)
    host = load_host(root)
    assert host.extension("more_samplers").loaded, host.extension("more_samplers").error
    return host


@pytest.fixture(scope="module")
def engine(manager: ModelManager, host, tmp_path_factory: pytest.TempPathFactory) -> Engine:  # type: ignore[no-untyped-def]
    config = AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path_factory.mktemp("out"))
    return Engine(config, manager, host)


def _calls(host) -> list:  # type: ignore[no-untyped-def]
    return host.extension("more_samplers").module.CALLS


def test_catalog_names_resolution_and_errors() -> None:
    cat = SamplerCatalog((ExtraSampler("Mine", lambda c: None, ("k_mine",)),))
    assert cat.names()[-1] == "Mine" and "Mine" not in BUILTIN.names()
    assert cat.resolve("k_mine") == ("Mine", "Automatic") == cat.resolve("mine", "automatic")
    assert cat.resolve("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")  # built-ins unchanged
    with pytest.raises(UnknownSampler) as e:
        cat.resolve("Mine", "Karras")
    assert e.value.field == "scheduler"
    with pytest.raises(UnknownSampler, match="Mine") as e:
        cat.resolve("Nope")  # the list of valid names includes the extension's
    assert e.value.field == "sampler_name"
    with pytest.raises(UnknownSampler):
        BUILTIN.resolve("Mine")
    assert [s["name"] for s in cat.list_samplers()][-1] == "Mine"


def test_an_extension_sampler_runs_and_is_recorded(engine: Engine, host) -> None:  # type: ignore[no-untyped-def]
    before = len(_calls(host))
    twin = engine.run(Txt2ImgRequest(**SMALL, sampler_name="k_euler_twin"))
    assert len(_calls(host)) == before + 1  # the extension's scheduler ran the job
    assert _calls(host)[-1]["num_train_timesteps"] == 1000  # given the model's scheduler config
    euler = engine.run(Txt2ImgRequest(**SMALL, sampler_name="Euler"))
    other = engine.run(Txt2ImgRequest(**SMALL, sampler_name="DPM++ 2M"))
    a, b, c = (np.asarray(r.images[0].image) for r in (twin, euler, other))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(_calls(host)) == before + 1  # "Euler" is the built-in one, not the extension's clash
    info = parse_infotext(twin.images[0].infotext)
    assert info["Sampler"] == "Euler Twin" and info["Schedule type"] == "Automatic"


def test_it_also_runs_the_hires_second_pass(engine: Engine, host) -> None:  # type: ignore[no-untyped-def]
    before = len(_calls(host))
    request = Txt2ImgRequest(
        **SMALL,
        enable_hr=True,
        hr_scale=1.5,
        hr_upscaler="Latent",
        hr_second_pass_steps=2,
        hr_sampler_name="Euler Twin",
    )
    result = engine.run(request)
    assert len(_calls(host)) == before + 1 and result.images[0].image.size == (96, 96)
    assert parse_infotext(result.images[0].infotext)["Hires sampler"] == "Euler Twin"


def test_img2img_runs_it_too(engine: Engine, host) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from webui.core.types import Img2ImgRequest

    init = Image.radial_gradient("L").resize((64, 64)).convert("RGB")
    base = {**SMALL, "init_images": (init,), "denoising_strength": 0.6}
    before = len(_calls(host))
    twin = engine.run(Img2ImgRequest(**base, sampler_name="Euler Twin"))
    euler = engine.run(Img2ImgRequest(**base, sampler_name="Euler"))
    assert len(_calls(host)) == before + 1
    assert np.array_equal(np.asarray(twin.images[0].image), np.asarray(euler.images[0].image))


def test_bad_names_and_broken_samplers_fail_clearly(engine: Engine) -> None:
    with pytest.raises(RequestError) as e:
        engine.run(Txt2ImgRequest(**SMALL, sampler_name="Euler Twin", scheduler="Karras"))
    assert e.value.field == "scheduler"
    with pytest.raises(TypeError, match="Broken.*diffusers-style scheduler"):
        engine.run(Txt2ImgRequest(**SMALL, sampler_name="Broken"))
    with pytest.raises(RequestError) as e:  # without the extension's catalog the name is unknown
        Txt2ImgRequest(**SMALL, sampler_name="Euler Twin").validate()
    assert e.value.field == "sampler_name" and "Euler Twin" not in str(e.value).split("valid names are")[1]


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:  # type: ignore[no-untyped-def]
    with running_server(tiny_data_dir, tmp_path_factory.mktemp("sampler-srv")) as running:
        running.services.engine.hooks = host  # this server's engine runs with the test extension
        yield running


def test_the_api_lists_and_runs_it_through_the_queue(srv: Running) -> None:
    with srv.client() as c:
        names = [s["name"] for s in c.get("/sdapi/v1/samplers").json()]
        assert "Euler Twin" in names and names.count("Euler") == 1
        r = c.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler Twin", "checkpoint": None})
        assert r.status_code == 200, r.text
        assert '"sampler_name": "Euler Twin"' in r.json()["info"]
        bad = c.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler Twin", "scheduler": "Karras"})
        assert bad.status_code == 422 and "scheduler" in bad.text


def test_the_studio_dropdowns_offer_it(srv: Running) -> None:
    from webui.ui.studio import build_studio

    studio = build_studio(srv.services)
    dropdowns = {
        c.elem_id: [x[0] if isinstance(x, tuple) else x for x in c.choices]
        for c in studio.blocks.blocks.values()
        if getattr(c, "elem_id", None) in ("txt2img_sampler", "img2img_sampler", "txt2img_hr_sampler")
    }
    assert len(dropdowns) == 3 and all("Euler Twin" in v for v in dropdowns.values()), dropdowns
