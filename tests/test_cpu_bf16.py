"""`--precision bf16` on the CPU: the models run in bfloat16 (the CPU's fast half precision: AVX512-BF16 /
AMX), convolutional parts in channels-last memory; fp32 CPU runs stay exactly as they were."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from webui import offline
from webui.core.config import AppConfig
from webui.core.devices import choose_precision, device_notes, precision_note
from webui.core.engine import Engine
from webui.core.models.components import Precision, wants_channels_last
from webui.core.models.manager import ModelManager
from webui.core.types import Img2ImgRequest, Txt2ImgRequest

ROOT = Path(__file__).resolve().parent.parent
BF16 = Precision("cpu", torch.bfloat16, torch.bfloat16)
BASE: dict[str, Any] = dict(
    prompt="a red barn in a field", negative_prompt="blurry", width=64, height=64, steps=4, seed=7,
    sampler_name="Euler", save_images=False,
)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "dtype", "vae_dtype"),
    [({}, torch.float32, torch.float32),
     ({"precision": "half"}, torch.float32, torch.float32),
     ({"precision": "bf16"}, torch.bfloat16, torch.bfloat16),
     ({"precision": "bf16", "no_half_vae": True}, torch.bfloat16, torch.float32),
     ({"precision": "bf16", "no_half": True}, torch.float32, torch.float32),
     ({"precision": "full"}, torch.float32, torch.float32)],
)  # fmt: skip
def test_the_cpu_runs_bf16_only_when_asked(
    tmp_path: Path, flags: dict[str, Any], dtype: torch.dtype, vae_dtype: torch.dtype
) -> None:
    p = choose_precision(AppConfig.for_data_dir(tmp_path, **flags), cuda_available=False)
    assert (p.device, p.dtype, p.vae_dtype) == ("cpu", dtype, vae_dtype)


def test_the_notes_say_what_the_cpu_precision_is(tmp_path: Path) -> None:
    bf16 = AppConfig.for_data_dir(tmp_path, precision="bf16")
    emulated = precision_note(bf16, BF16, bf16_hardware=False)
    assert emulated is not None and "emulated" in emulated and "AVX512-BF16" in emulated
    fast = precision_note(bf16, Precision("cpu", torch.bfloat16, torch.float32), bf16_hardware=True)
    assert fast is not None and "bf16" in fast and "VAE in fp32" in fast
    half = AppConfig.for_data_dir(tmp_path, precision="half")
    note = precision_note(half, Precision())
    assert note is not None and "fp32" in note and "--precision bf16" in note
    assert precision_note(AppConfig.for_data_dir(tmp_path), Precision()) is None  # nothing asked
    assert precision_note(bf16, Precision("cuda", torch.bfloat16, torch.bfloat16)) is None
    lowvram = AppConfig.for_data_dir(tmp_path, vram="lowvram", precision="half")
    assert [n.split(":")[0] for n in device_notes(lowvram, Precision())] == ["--lowvram", "--precision half"]


def test_channels_last_only_where_it_is_faster() -> None:
    assert wants_channels_last("cuda", torch.float16) and wants_channels_last("cuda:1", torch.float32)
    assert wants_channels_last("cpu", torch.bfloat16)
    assert not wants_channels_last("cpu", torch.float32)


@pytest.fixture(scope="module")
def managers(tiny_data_dir: Path) -> dict[str, ModelManager]:
    out = {}
    for name, precision in (("fp32", Precision()), ("bf16", BF16)):
        out[name] = ModelManager(AppConfig.for_data_dir(tiny_data_dir), precision)
        out[name].refresh()
    return out


def _engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out"), manager)


def _is_channels_last(module: torch.nn.Module) -> bool:
    convs = [p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    return bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_a_bf16_job_runs_in_bf16_and_stays_near_its_fp32_picture(
    managers: dict[str, ModelManager], tmp_path: Path, checkpoint: str, one_torch_thread: None
) -> None:
    pictures = {}
    for name, manager in managers.items():
        result = _engine(manager, tmp_path).run(Txt2ImgRequest(**BASE, checkpoint=checkpoint))
        assert not result.warnings
        pictures[name] = np.asarray(result.images[0].image, dtype=np.int16)
        with manager.acquire(checkpoint) as loaded:
            parts = loaded.components
            assert parts.unet.dtype == (torch.float32 if name == "fp32" else torch.bfloat16)
            assert parts.vae.dtype == parts.unet.dtype
            assert _is_channels_last(parts.unet) is _is_channels_last(parts.vae) is (name == "bf16")
    diff = np.abs(pictures["fp32"] - pictures["bf16"])
    assert diff.any()  # bf16 really ran: not the fp32 picture
    assert diff.mean() < 8, diff.mean()  # and it is the same picture, up to bf16 rounding


def test_a_bf16_inpaint_keeps_every_pixel_outside_the_mask(
    managers: dict[str, ModelManager], tmp_path: Path, one_torch_thread: None
) -> None:
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 40, 40), fill=255)
    request = Img2ImgRequest(
        **BASE, init_images=(init,), mask=mask, mask_blur=0, denoising_strength=1.0, checkpoint="tiny-sd1"
    )
    out = np.asarray(_engine(managers["bf16"], tmp_path).run(request).images[0].image)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert not np.array_equal(out[~keep], np.asarray(init)[~keep])


def test_a_flux_model_runs_in_bf16_on_the_cpu(tiny_flux_data_dir: Path, tmp_path: Path) -> None:
    manager = ModelManager(AppConfig.for_data_dir(tiny_flux_data_dir), BF16)
    manager.refresh()
    request = Txt2ImgRequest(**{**BASE, "steps": 2, "cfg_scale": 1.0}, checkpoint="tiny-flux-schnell-split")
    result = _engine(manager, tmp_path).run(request)
    assert np.asarray(result.images[0].image).std() > 0
    with manager.acquire("tiny-flux-schnell-split") as loaded:
        assert loaded.components.transformer.dtype == torch.bfloat16


def test_the_command_line_says_bf16_and_writes_the_picture(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "Stable-diffusion").symlink_to(tiny_data_dir / "models" / "Stable-diffusion")
    env = dict(os.environ)
    offline.apply(env)
    args = ["a barn", "--steps", "2", "--width", "64", "--height", "64", "--model", "tiny-sd1",
            "--data-dir", str(data), "--precision", "bf16", "--seed", "3"]  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "webui.generate", *args], capture_output=True, text=True, timeout=300, env=env,
        cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "note:" in r.stderr and "bf16" in r.stderr
    (path,) = [Path(line) for line in r.stdout.split()]
    with Image.open(path) as im:
        assert im.size == (64, 64)
