"""The hires pass on its own checkpoint (`hr_checkpoint_name`) and the refiner switch (`refiner_checkpoint`,
`refiner_switch_at`) through `Engine.run`, on two tiny SD1 checkpoints with different weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.prompts.conditioning import EncodingCache, PromptEncoder
from webui.core.sampling import noise as noise_mod
from webui.core.sampling.catalog import BUILTIN
from webui.core.sampling.loop import HookPoint, ModelCallState
from webui.core.sampling.samplers import set_timesteps
from webui.core.tasks import hires, refiner
from webui.core.tasks.images import decode, to_pil
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest

BASE: dict[str, Any] = dict(
    prompt="a red apple",
    negative_prompt="blurry",
    steps=6,
    seed=7,
    width=64,
    height=64,
    save_images=False,
    checkpoint="tiny-sd1",
)
B = "tiny-sd1-b"


def two_sd1_data_dir(tiny_files: dict[str, Path], data: Path) -> Path:
    """A data folder with tiny-sd1 (weights from seed 0), tiny-sd1-b (seed 1), and models of other
    architectures (tiny-sd1-inpaint, tiny-sdxl)."""
    from webui.core.models.tiny import build_tiny, save_single_file

    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    for arch in ("sd1", "sd1-inpaint", "sdxl"):
        shutil.copy(tiny_files[arch], ckpts / f"tiny-{arch}.safetensors")
    save_single_file(build_tiny("sd1", seed=1), ckpts / f"{B}.safetensors")
    return data


@pytest.fixture(scope="module")
def manager(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    data = two_sd1_data_dir(tiny_files, tmp_path_factory.mktemp("passes"))
    m = ModelManager(AppConfig.for_data_dir(data), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out"), manager)


def _pixels(result: Any) -> np.ndarray:
    return np.asarray(result.images[0].image).astype(int)


class CallLog:
    """A BEFORE_MODEL hook that records which denoiser each model call went to."""

    def __init__(self) -> None:
        self.models: list[Any] = []

    def __call__(self, point: HookPoint, state: ModelCallState) -> None:
        self.models.append(state.inputs.model)

    def runs(self) -> list[int]:
        """Lengths of the runs of consecutive calls to one model."""
        out: list[int] = []
        for i, m in enumerate(self.models):
            if i and m is self.models[i - 1]:
                out[-1] += 1
            else:
                out.append(1)
        return out


# -- hires checkpoint --------------------------------------------------------------------------------


HIRES: dict[str, Any] = dict(
    enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", hr_second_pass_steps=4, denoising_strength=0.6
)


def test_hires_on_another_checkpoint_equals_img2img_on_it_from_the_first_pass(engine: Engine) -> None:
    on_b = engine.run(Txt2ImgRequest(**BASE, **HIRES, hr_checkpoint_name=B))
    same = engine.run(Txt2ImgRequest(**BASE, **HIRES))
    assert on_b.images[0].image.size == (96, 96)
    assert np.abs(_pixels(on_b) - _pixels(same)).max() > 8  # the second pass ran on other weights
    # by hand: the first pass on the job's checkpoint, then its picture resized (Lanczos) and img2img'd on B
    first = engine.run(Txt2ImgRequest(**BASE))
    by_hand = engine.run(
        Img2ImgRequest(
            **{**BASE, "width": 96, "height": 96, "steps": 4, "checkpoint": B},
            init_images=(first.images[0].image,),
            denoising_strength=0.6,
        )
    )
    assert np.array_equal(_pixels(on_b), _pixels(by_hand))


def test_hires_checkpoint_round_trips_through_infotext(engine: Engine, manager: ModelManager) -> None:
    r = engine.run(Txt2ImgRequest(**BASE, **{**HIRES, "hr_upscaler": "Latent"}, hr_checkpoint_name=B))
    info = parse_infotext(r.images[0].infotext)
    b = manager.resolve(B)
    assert info["Hires checkpoint"] == f"{b.model_name} [{b.shorthash}]" if b.shorthash else b.model_name
    fields = hires.fields_from_infotext(info)
    assert fields["hr_checkpoint_name"] == info["Hires checkpoint"]
    again = engine.run(Txt2ImgRequest(**BASE, **fields))  # type: ignore[arg-type]
    assert np.array_equal(_pixels(r), _pixels(again))
    plain = engine.run(Txt2ImgRequest(**BASE, **{**HIRES, "hr_upscaler": "Latent"}))
    assert "Hires checkpoint" not in parse_infotext(plain.images[0].infotext)
    assert not np.array_equal(_pixels(r), _pixels(plain))


def test_the_same_checkpoint_changes_nothing(engine: Engine) -> None:
    hr = {**HIRES, "hr_upscaler": "Latent", "hr_second_pass_steps": 2}
    plain = engine.run(Txt2ImgRequest(**BASE, **hr))
    for same in ("", "Use same checkpoint", "tiny-sd1"):
        again = engine.run(Txt2ImgRequest(**BASE, **hr, hr_checkpoint_name=same))
        assert np.array_equal(_pixels(plain), _pixels(again)), same


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"hr_checkpoint_name": "nope"}, "hr_checkpoint_name", "not found"),
        ({"hr_checkpoint_name": "tiny-sdxl"}, "hr_checkpoint_name", "same family"),
        ({"refiner_checkpoint": "nope", "refiner_switch_at": 0.5}, "refiner_checkpoint", "not found"),
        ({"refiner_checkpoint": "tiny-sdxl", "refiner_switch_at": 0.5}, "refiner_checkpoint", "architecture"),
        ({"refiner_checkpoint": "tiny-sd1-inpaint", "refiner_switch_at": 0.5}, "refiner_checkpoint", "SD1"),
        ({"refiner_checkpoint": B}, "refiner_switch_at", "needed"),
        ({"refiner_checkpoint": B, "refiner_switch_at": 0.0}, "refiner_switch_at", "above 0"),
        ({"refiner_checkpoint": B, "refiner_switch_at": 1.5}, "refiner_switch_at", "between"),
        ({"refiner_checkpoint": 3, "refiner_switch_at": 0.5}, "refiner_checkpoint", "title"),
    ],
)
def test_bad_other_checkpoints_are_refused_before_any_work(
    engine: Engine, kw: dict[str, Any], field: str, words: str
) -> None:
    request = Txt2ImgRequest(**BASE, **HIRES, **kw)
    with pytest.raises(RequestError) as e:
        engine.check(request)
    assert e.value.field == field and words in e.value.message


def test_a_hires_checkpoint_without_hires_is_not_used(engine: Engine) -> None:
    r = engine.run(Txt2ImgRequest(**BASE, hr_checkpoint_name="nope"))  # A1111 reads it only with hires
    assert "Hires checkpoint" not in r.images[0].infotext


# -- refiner ---------------------------------------------------------------------------------------------


def test_refiner_switch_runs_each_model_its_share_of_the_steps(engine: Engine) -> None:
    log = CallLog()
    r = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=0.5), model_hooks=[log])
    assert log.runs() == [3, 3]
    info = parse_infotext(r.images[0].infotext)
    assert info["Refiner switch at"] == "0.5" and info["Refiner"].startswith(B)
    assert info["Refiner switch by sampling steps"] == "True"
    log = CallLog()
    engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=0.8), model_hooks=[log])
    assert log.runs() == [5, 1]  # A1111: the first step with step / steps >= 0.8 is 5 of 6


def test_refiner_at_one_or_on_the_same_checkpoint_equals_no_refiner(engine: Engine) -> None:
    plain = engine.run(Txt2ImgRequest(**BASE))
    never = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=1.0))
    same = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.5))
    half = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=0.5))
    assert np.array_equal(_pixels(plain), _pixels(never))
    assert np.array_equal(_pixels(plain), _pixels(same))
    assert "Refiner" not in parse_infotext(same.images[0].infotext)  # A1111: no switch, no keys
    assert np.abs(_pixels(plain) - _pixels(half)).max() > 8


def test_refiner_switch_equals_a_loop_written_by_hand(engine: Engine, manager: ModelManager) -> None:
    """DPM++ 2M keeps its history across the switch: the same scheduler goes on with the refiner's UNet
    and text encoder; the refiner's VAE decodes."""
    steps, k, cfg = 6, 3, 7.0
    r = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=0.5))
    with manager.acquire("tiny-sd1") as a, manager.acquire(B) as b, torch.no_grad():
        texts = []
        for m in (a, b):
            enc = PromptEncoder(m.components, ("by hand", m.file.name), EncodingCache(), {})
            c = enc.schedule(BASE["prompt"], steps, 1).at(0)[0][0].embeds
            u = enc.schedule(BASE["negative_prompt"], steps, 1, multicond=False).at(0)[0][0].embeds
            texts.append(torch.cat([u, c]))
        sched = BUILTIN.make_scheduler("DPM++ 2M", "Automatic", a.components.scheduler_config)
        set_timesteps(sched, steps, "cpu")
        x = noise_mod.initial_noise((4, 8, 8), [BASE["seed"]]) * sched.init_noise_sigma
        for i, t in enumerate(sched.timesteps):
            unet, text = (a.components.unet, texts[0]) if i < k else (b.components.unet, texts[1])
            pred = unet(sched.scale_model_input(torch.cat([x, x]), t), t, encoder_hidden_states=text).sample
            u, c = pred.chunk(2)
            x = sched.step(u + cfg * (c - u), t, x).prev_sample
        by_hand = to_pil(decode(b.components.vae, x))[0]
    assert np.abs(_pixels(r) - np.asarray(by_hand).astype(int)).max() <= 1


def test_img2img_refiner_switches_within_the_steps_it_runs(engine: Engine) -> None:
    init = engine.run(Txt2ImgRequest(**BASE)).images[0].image
    kw: dict[str, Any] = {**BASE, "steps": 8, "init_images": (init,), "denoising_strength": 0.75}
    log = CallLog()
    half = engine.run(Img2ImgRequest(**kw, refiner_checkpoint=B, refiner_switch_at=0.5), model_hooks=[log])
    assert log.runs() == [3, 3]  # 6 of the 8 steps run
    plain = engine.run(Img2ImgRequest(**kw))
    never = engine.run(Img2ImgRequest(**kw, refiner_checkpoint=B, refiner_switch_at=1.0))
    assert np.array_equal(_pixels(plain), _pixels(never))
    assert not np.array_equal(_pixels(plain), _pixels(half))
    assert parse_infotext(half.images[0].infotext)["Refiner switch at"] == "0.5"


def test_with_hires_the_refiner_takes_over_in_the_second_pass(engine: Engine) -> None:
    log = CallLog()
    hr = {**HIRES, "hr_upscaler": "Latent", "denoising_strength": 1.0}
    engine.run(Txt2ImgRequest(**BASE, **hr, refiner_checkpoint=B, refiner_switch_at=0.5), model_hooks=[log])
    assert log.runs() == [6 + 2, 2]  # the first pass and half the second on the job's checkpoint
    log = CallLog()
    engine.run(
        Txt2ImgRequest(
            **BASE, **hr, hr_checkpoint_name=B, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.5
        ),
        model_hooks=[log],
    )
    assert log.runs() == [6, 2, 2]  # job's, hires checkpoint's, then back to the job's as refiner


def test_refiner_round_trips_through_infotext(engine: Engine) -> None:
    r = engine.run(Txt2ImgRequest(**BASE, refiner_checkpoint=B, refiner_switch_at=0.5))
    info = parse_infotext(r.images[0].infotext)
    fields = refiner.fields_from_infotext(info)
    assert fields == {"refiner_checkpoint": info["Refiner"], "refiner_switch_at": 0.5}
    again = engine.run(Txt2ImgRequest(**BASE, **fields))  # type: ignore[arg-type]
    assert np.array_equal(_pixels(r), _pixels(again))
    assert refiner.fields_from_infotext({"Steps": "20"}) == {}


def test_switch_step_is_a1111s_comparison() -> None:
    assert [refiner.switch_step(20, x) for x in (0.8, 0.5, 0.01, 1.0)] == [16, 10, 1, 20]
    assert refiner.switch_step(3, 0.5) == 2  # 1/3 < 0.5 <= 2/3
