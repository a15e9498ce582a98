"""The hires pass runs with its own prompt's LoRAs and styles, as A1111: the UNet weights seen at each
step (read by a step hook) switch at the second pass and are restored after; a text-encoder-only LoRA in
the hires prompt changes only the second pass; hashes, warnings and styles follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.networks.tiny import write_tiny_lora
from webui.core.outputs.infotext import parse_infotext
from webui.core.prompts.styles import Style
from webui.core.sampling.loop import HookPoint, StepState
from webui.core.tasks.hires_networks import network_delta
from webui.core.types import Txt2ImgRequest

# 3 first-pass steps, then int(4 x 0.5) = 2 hires steps
BASE = dict(
    prompt="a red cube", checkpoint="tiny-sd1", steps=3, width=64, height=64, seed=5, save_images=False,
    enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=4, denoising_strength=0.5,
)  # fmt: skip


@pytest.fixture(scope="module")
def engine(
    tiny_data_dir: Path, tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Engine:
    tmp = tmp_path_factory.mktemp("hires-lora")
    write_tiny_lora(tmp / "Lora" / "detail.safetensors", load_model(tiny_files["sd1"], Precision()), seed=9)
    config = AppConfig.for_data_dir(
        tiny_data_dir,
        lora_dirs=(tmp / "Lora",),
        cache_dir=tmp / "cache",
        outputs_dir=tmp / "outputs",
        styles_path=tmp / "styles.csv",
    )
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager)


class Probe:
    """A UNet weight the tiny LoRA patches, and a step hook recording its sum before every step."""

    def __init__(self, engine: Engine) -> None:
        with engine.manager.acquire("tiny-sd1") as model:
            unet = model.components.unet
        name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        self.weight = dict(unet.named_modules())[name].weight
        self.seen: list[float] = []

    def hook(self, point: HookPoint, state: StepState) -> None:
        if point is HookPoint.BEFORE_STEP:
            self.seen.append(float(self.weight.detach().double().sum()))


def _run(engine: Engine, **kw: Any) -> tuple[Any, list[float]]:
    probe = Probe(engine)
    result = engine.run(Txt2ImgRequest(**{**BASE, **kw}), hooks=(probe.hook,))
    return result, probe.seen


def test_a_lora_only_in_the_hires_prompt_patches_only_the_second_pass(engine: Engine) -> None:
    weight = Probe(engine).weight
    before = weight.detach().clone()
    plain, seen_plain = _run(engine)
    hr, seen_hr = _run(engine, hr_prompt="a red cube <lora:detail:0:1>")  # UNet only
    assert len(seen_hr) == 3 + 2
    assert seen_hr[:3] == seen_plain[:3]  # first pass: the model as loaded
    assert all(s != seen_plain[0] for s in seen_hr[3:]) and seen_hr[3] == seen_hr[4]  # second: patched
    assert torch.equal(weight, before)  # restored after the job
    assert not np.array_equal(np.asarray(plain.images[0].image), np.asarray(hr.images[0].image))
    info = parse_infotext(hr.images[0].infotext)
    assert info["Hires prompt"] == "a red cube <lora:detail:0:1>" and "detail:" in info["Lora hashes"]


def test_a_lora_in_the_prompt_can_be_left_out_of_the_hires_pass(engine: Engine) -> None:
    weight = Probe(engine).weight
    before = weight.detach().clone()
    both, seen_both = _run(engine, prompt="a red cube <lora:detail:1>")
    first_only, seen_first = _run(engine, prompt="a red cube <lora:detail:1>", hr_prompt="a red cube")
    _, seen_plain = _run(engine)
    assert seen_both[:3] == seen_first[:3] and seen_both[3:] == seen_both[:2]  # patched throughout
    assert seen_first[3:] == seen_plain[:2]  # hires pass: back to the loaded weights, exactly
    assert torch.equal(weight, before)
    assert not np.array_equal(np.asarray(both.images[0].image), np.asarray(first_only.images[0].image))
    # the same LoRA and weight in both prompts: nothing to switch, the hires pass stays patched
    _, seen_same = _run(engine, prompt="a red cube <lora:detail:1>", hr_prompt="a red cube, <lora:detail:1>")
    assert seen_same[3:] == seen_both[:2]


def test_network_delta_keeps_only_changes(engine: Engine) -> None:
    item = engine.loras.find("detail")
    assert item is not None
    assert network_delta([(item, 1.0, 1.0)], [(item, 1.0, 1.0)]) == []
    assert network_delta([(item, 1.0, 1.0)], [(item, 0.5, 1.0)]) == [(item, -0.5, 0.0)]
    assert network_delta([], [(item, 0.0, 2.0)]) == [(item, 0.0, 2.0)]


def test_a_text_encoder_lora_in_the_hires_prompt_changes_only_the_hires_conditioning(engine: Engine) -> None:
    plain, seen_plain = _run(engine, hr_prompt="a red cube, shiny")
    te, seen_te = _run(engine, hr_prompt="a red cube, shiny <lora:detail:1:0>")
    assert seen_te == seen_plain  # the UNet is never patched
    assert not np.array_equal(np.asarray(plain.images[0].image), np.asarray(te.images[0].image))
    again, _ = _run(engine, hr_prompt="a red cube, shiny")  # the cache kept the two encodings apart
    assert np.array_equal(np.asarray(plain.images[0].image), np.asarray(again.images[0].image))


def test_styles_apply_to_the_hires_prompts_and_unknown_loras_warn(engine: Engine) -> None:
    engine.styles.save(Style("gold", "{prompt}, gold leaf", "dull"))
    styled, _ = _run(engine, hr_prompt="a blue cube", styles=("gold",))
    typed, _ = _run(
        engine, prompt="a red cube, gold leaf", negative_prompt="dull", hr_prompt="a blue cube, gold leaf",
        hr_negative_prompt="dull",
    )  # fmt: skip
    assert np.array_equal(np.asarray(styled.images[0].image), np.asarray(typed.images[0].image))
    missing, _ = _run(engine, hr_prompt="a red cube <lora:nowhere:1>")
    assert any("nowhere" in w for w in missing.warnings), missing.warnings
