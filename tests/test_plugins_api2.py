"""Plugin API 2 through real Engine runs: the before-model hook, image fields, the job's components and the
after-decode sub-pass, with tests/fixtures_extensions/residual_probe (an API 2.0 extension)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_plugins_host import load_host, write_extension
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.plugins.discovery import discover
from webui.plugins.host import PluginHost

FIXTURES = Path(__file__).parent / "fixtures_extensions"
SMALL = dict(
    prompt="a red apple", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1", save_images=False
)


def pixels(result: GenerationResult, i: int = 0) -> np.ndarray:
    return np.asarray(result.images[i].image)


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def probe_host(tmp_path: Path) -> PluginHost:
    return PluginHost.load(discover([(FIXTURES, "user")]), data_dir=tmp_path)


@pytest.fixture
def engine(manager: ModelManager, probe_host: PluginHost, tmp_path: Path) -> Engine:
    config = AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out")
    return Engine(config, manager, probe_host)


def probe(**args: object) -> Txt2ImgRequest:
    return Txt2ImgRequest(**SMALL, extension_args={"residual_probe": args})  # type: ignore[arg-type]


def calls(host: PluginHost) -> list[tuple[int, int, str]]:
    module = host.extension("residual_probe").module
    assert module is not None
    return module.CALLS  # type: ignore[no-any-return]


def test_probe_loads_as_api_2(probe_host: PluginHost) -> None:
    (info,) = probe_host.extensions()
    assert (info.name, info.status, info.error) == ("residual_probe", "loaded", None)


def test_before_model_residuals_change_the_image_for_this_job_only(
    engine: Engine, probe_host: PluginHost
) -> None:
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert calls(probe_host) == []
    controlled = engine.run(probe(strength=1.0))
    assert not np.array_equal(pixels(controlled), pixels(plain))
    assert controlled.warnings == ()
    # the hook saw every step with the step count and the job's model
    assert calls(probe_host) == [(0, 3, "sd1"), (1, 3, "sd1"), (2, 3, "sd1")]
    after = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert np.array_equal(pixels(after), pixels(plain)), "residuals leaked into the next job"


def test_a_hook_that_adds_nothing_is_bit_equal(engine: Engine, probe_host: PluginHost) -> None:
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    idle = engine.run(probe(strength=0.0, mode="subtract"))
    assert np.array_equal(pixels(idle), pixels(plain))
    assert calls(probe_host) == []


def test_step_window_and_a_wrapped_model(engine: Engine, probe_host: PluginHost) -> None:
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    full = engine.run(probe(strength=1.0))
    window = engine.run(probe(strength=1.0, start=1, end=2))
    assert [c[0] for c in calls(probe_host)][-1:] == [1]
    assert not np.array_equal(pixels(window), pixels(full))
    assert not np.array_equal(pixels(window), pixels(plain))
    wrapped = engine.run(probe(wrap=True))
    assert not np.array_equal(pixels(wrapped), pixels(plain))
    # the wrapper lived for the calls only: the next job is the plain image again
    assert np.array_equal(pixels(engine.run(Txt2ImgRequest(**SMALL))), pixels(plain))  # type: ignore[arg-type]


def test_image_arguments_reach_the_hook_decoded(engine: Engine) -> None:
    white = engine.run(probe(strength=1.0))
    grey = engine.run(probe(strength=1.0, hint=data_url(Image.new("RGB", (16, 16), (128, 128, 128)))))
    assert not np.array_equal(pixels(grey), pixels(white))
    # plain base64 (no data: prefix) and a PIL image give the same picture
    raw = data_url(Image.new("RGB", (16, 16), (128, 128, 128))).split(",", 1)[1]
    assert np.array_equal(pixels(engine.run(probe(strength=1.0, hint=raw))), pixels(grey))
    pil = Image.new("RGB", (16, 16), (128, 128, 128))
    assert np.array_equal(pixels(engine.run(probe(strength=1.0, hint=pil))), pixels(grey))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("bm90IGFuIGltYWdl", "not an image"),
        ("http://127.0.0.1:9/a.png", "URLs are not accepted"),
        (12, "must be a base64-encoded image"),
    ],
)
def test_a_bad_image_argument_names_extension_and_field(engine: Engine, value: object, words: str) -> None:
    with pytest.raises(RequestError) as e:
        engine.run(probe(strength=1.0, hint=value))
    assert e.value.field == "extension_args.residual_probe.hint"
    assert words in e.value.message


def test_a_failing_before_model_hook_is_undone_and_reported(manager: ModelManager, tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(
        root,
        "raiser",
        "import torch\nfrom webui.plugins.api import hookimpl\nSEEN = []\n"
        "@hookimpl\ndef before_model(state):\n    SEEN.append(state.step)\n"
        "    state.inputs.extra['mid_block_additional_residual'] = torch.ones(1)\n"
        "    state.inputs.model = None\n    raise RuntimeError('boom in before_model')\n",
        api_version="2.0",
    )
    host = load_host(root, tmp_path)
    engine = Engine(AppConfig.for_data_dir(manager.config.data_dir), manager, host)
    plain = Engine(AppConfig.for_data_dir(manager.config.data_dir), manager).run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    result = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert np.array_equal(pixels(result), pixels(plain))
    assert host.extension("raiser").module.SEEN == [0]  # type: ignore[union-attr]
    (problem,) = result.warnings
    assert "'raiser' failed in before_model" in problem and "boom in before_model" in problem


def test_after_decode_runner_runs_an_img2img_sub_pass_on_the_loaded_model(
    engine: Engine, manager: ModelManager
) -> None:
    plain = engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    repainted = engine.run(probe(repaint=0.5))
    assert repainted.warnings == ()
    assert repainted.images[0].image.size == (64, 64)
    # what the sub-pass made is exactly the img2img job of the same request
    alone = Engine(engine.config, manager).run(
        Img2ImgRequest(
            prompt=SMALL["prompt"],  # type: ignore[arg-type]
            init_images=(plain.images[0].image,),
            denoising_strength=0.5,
            width=64,
            height=64,
            steps=3,
            seed=1,
            checkpoint="tiny-sd1",
            save_images=False,
        )
    )
    assert np.array_equal(pixels(repainted), pixels(alone))
    assert not np.array_equal(pixels(repainted), pixels(plain))


OWN_MODEL = """
import torch
from webui.plugins.api import hookimpl

BUILDS = []
SEEN = []

def build(state_dict):
    BUILDS.append(sorted(state_dict))
    layer = torch.nn.Linear(1, 1, bias=False)
    layer.load_state_dict(state_dict)
    return layer

@hookimpl
def before_model(state, context, components):
    with context.models.use("Probe/gain.safetensors", build, device=components.device,
                            dtype=components.dtype) as gain:
        SEEN.append((gain.training, gain.weight.requires_grad, gain.weight.dtype == components.dtype))
        state.inputs.sample = state.inputs.sample * float(gain.weight)
"""


def test_an_extension_loads_its_own_model_once_through_the_cache(
    manager: ModelManager, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    (tmp_path / "models" / "Probe").mkdir(parents=True)
    save_file({"weight": torch.tensor([[0.5]])}, tmp_path / "models" / "Probe" / "gain.safetensors")
    root = tmp_path / "extensions"
    write_extension(root, "own_model", OWN_MODEL, api_version="2.0")
    host = load_host(root, tmp_path)
    config = AppConfig.for_data_dir(manager.config.data_dir)
    plain = Engine(config, manager).run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    engine = Engine(config, manager, host)
    first, second = engine.run(Txt2ImgRequest(**SMALL)), engine.run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert first.warnings == () and np.array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), pixels(plain))
    module = host.extension("own_model").module
    assert module.BUILDS == [["weight"]], "loaded once, then taken from the cache"  # type: ignore[union-attr]
    assert set(module.SEEN) == {(False, False, True)}  # type: ignore[union-attr]
    models = host.extension("own_model").context.models  # type: ignore[union-attr]
    assert models.files("Probe") == [(tmp_path / "models" / "Probe" / "gain.safetensors").resolve()]
    with (
        pytest.raises(RequestError, match="inside the models folder"),
        models.use("../outside.pt", lambda sd: sd),
    ):
        pass
    with (
        pytest.raises(RequestError, match="no such file"),
        models.use("Probe/none.safetensors", lambda sd: sd),
    ):
        pass


CANCELLING = """
from webui.plugins.api import Img2ImgRequest, hookimpl

TOKEN = []

@hookimpl
def after_decode(images, runner):
    TOKEN[0].interrupt()
    return runner(Img2ImgRequest(prompt="x", init_images=(images[0],), width=64, height=64, steps=2))
"""


def test_an_interrupt_during_a_sub_pass_stops_the_job_without_blaming_the_extension(
    manager: ModelManager, tmp_path: Path
) -> None:
    from webui.core.sampling.loop import CancelToken

    write_extension(tmp_path / "extensions", "cancelling", CANCELLING, api_version="2.0")
    host = load_host(tmp_path / "extensions", tmp_path)
    token = CancelToken()
    host.extension("cancelling").module.TOKEN.append(token)  # type: ignore[union-attr]
    engine = Engine(AppConfig.for_data_dir(manager.config.data_dir), manager, host)
    result = engine.run(Txt2ImgRequest(**{**SMALL, "n_iter": 2}), cancel=token)  # type: ignore[arg-type]
    assert result.interrupted and result.warnings == ()
    # as for any interrupt, the batch's pictures are kept (as decoded: the sub-pass never finished)
    plain = Engine(AppConfig.for_data_dir(manager.config.data_dir), manager).run(Txt2ImgRequest(**SMALL))  # type: ignore[arg-type]
    assert len(result.images) == 1 and np.array_equal(pixels(result), pixels(plain))


def test_before_model_reaches_img2img_and_inpaint_jobs(engine: Engine, probe_host: PluginHost) -> None:
    start = Image.new("RGB", (64, 64), (200, 60, 60))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    for extra in ({}, {"mask": mask}):
        base = dict(SMALL, init_images=(start,), denoising_strength=0.6, **extra)
        plain = engine.run(Img2ImgRequest(**base))  # type: ignore[arg-type]
        args = {"residual_probe": {"strength": 1.0}}
        controlled = engine.run(Img2ImgRequest(**base, extension_args=args))  # type: ignore[arg-type]
        assert not np.array_equal(pixels(controlled), pixels(plain)), extra
    total = calls(probe_host)[0][1]  # the steps the strength leaves, each seen once per job
    assert calls(probe_host) == [(i, total, "sd1") for i in range(total)] * 2
