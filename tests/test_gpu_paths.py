"""Code paths that run on a GPU, proven on the CPU: the decisions taken from GPU facts (free memory, the
dtype a GPU runs in) fed CUDA-like values, and the fp16 dtype choices run for real on the CPU, where fp16
works too (slowly), with the tiny models through the real loaders."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from webui.core.config import AppConfig
from webui.core.models.components import Precision, vae_compute_dtype
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.tasks import vae_tiles
from webui.core.tasks.images import decode
from webui.core.tasks.vae_tiles import AUTO, cuda_free, tiles_needed

GiB = 2**30
FP16 = Precision("cpu", torch.float16, torch.float16)  # what --precision half gives on a GPU
BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_vae_compute_dtype_upcasts_fp16_only_when_the_vae_asks() -> None:
    assert vae_compute_dtype(torch.float16, force_upcast=True) == torch.float32
    assert vae_compute_dtype(torch.float16, force_upcast=False) == torch.float16
    assert vae_compute_dtype(torch.bfloat16, force_upcast=True) == torch.bfloat16  # bf16 does not overflow
    assert vae_compute_dtype(torch.float32, force_upcast=True) == torch.float32


def test_a_separate_vae_file_runs_in_fp32_like_the_checkpoints_own(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    """An SDXL VAE in fp16 overflows (black or NaN pictures on a GPU): its config says force_upcast, and a
    VAE chosen from the VAE folder must honour it as the checkpoint's own VAE does."""
    from webui.core.models.ldm_layout import vae_to_ldm

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    other = build_tiny("sd1", seed=7).vae
    assert other.config.force_upcast
    save_file(
        vae_to_ldm(other.state_dict(), other.config), str(data / "models" / "VAE" / "my.vae.safetensors")
    )
    manager = ModelManager(AppConfig.for_data_dir(data), FP16)
    manager.refresh()
    with manager.acquire("tiny-sd1") as own:
        assert own.components.unet.dtype == torch.float16
        assert own.components.vae.dtype == torch.float32
    with manager.acquire("tiny-sd1", vae="my.vae.safetensors") as chosen:
        assert chosen.components.unet.dtype == torch.float16
        assert chosen.components.vae.dtype == torch.float32
        for k, v in other.state_dict().items():
            assert torch.equal(chosen.components.vae.state_dict()[k], v)


def test_auto_tiling_decides_from_cuda_like_free_memory() -> None:
    sdxl_1024 = 1024 * 1024 * 128 * 4 * 8  # untiled_bytes of the SDXL VAE (128 channels, fp32) at 1024 px
    assert sdxl_1024 == 4 * GiB
    assert not tiles_needed(sdxl_1024, 70 * GiB)  # an H100 with the model loaded
    assert tiles_needed(sdxl_1024, 3 * GiB)  # a small card
    assert not tiles_needed(sdxl_1024, None)  # unknown: untiled, and tiled if it runs out of memory
    # torch's cache counts as free: the driver's free bytes plus reserved-but-unused ones
    assert cuda_free(driver_free=2 * GiB, reserved=6 * GiB, allocated=1 * GiB) == 7 * GiB
    assert cuda_free(driver_free=2 * GiB, reserved=0, allocated=0) == 2 * GiB


def test_a_decode_out_of_memory_is_tiled_after_the_failure_is_let_go() -> None:
    """The tiled retry runs after the except block: inside it, the traceback would keep the failed
    untiled run's activations alive on the GPU while the tiles run."""
    vae = build_tiny("sd1", seed=0).vae.eval()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    calls: list[Any] = []

    def conv_in(_m: torch.nn.Module, _args: Any) -> None:
        calls.append(sys.exc_info()[0])
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = vae.decoder.conv_in.register_forward_pre_hook(conv_in)
    try:
        assert not AUTO.wanted(vae, 64, 64)  # untiled first
        out = decode(vae, latents * vae.config.scaling_factor, AUTO)
    finally:
        handle.remove()
    assert len(calls) == 2 and calls[1] is None  # the tiled run saw no exception being handled
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    expected = vae_tiles.decode_tiled(vae, latents, AUTO)
    assert torch.allclose(out, expected, atol=1e-5)  # (the latents' scale undone: rounding only)


def _bench_gpu() -> ModuleType:
    """bench/gpu.py as a module (a script, not a package)."""
    if "bench_gpu" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "gpu.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_gpu"] = module  # (its dataclasses look their module up there)
        spec.loader.exec_module(module)
    return sys.modules["bench_gpu"]


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_bench_diffusers_pipeline_runs_with_an_fp16_unet_and_an_upcast_vae(arch: str, tmp_path: Path) -> None:
    """On a GPU the engine's UNet is fp16 and its VAE fp32: diffusers' SD1 and SDXL pipelines hand the
    VAE fp16 latents, which bench/gpu.py's comparison must cast (else: "Input type (c10::Half) and bias
    type (float) should be the same" at the first diffusers run)."""
    gpu = _bench_gpu()
    parts = load_model(save_single_file(build_tiny(arch, seed=0), tmp_path / f"{arch}.safetensors"), FP16)
    assert parts.unet.dtype == torch.float16 and parts.vae.dtype == torch.float32
    pipe = gpu._pipeline(parts)
    call = dict(prompt="a lighthouse", negative_prompt="blurry", height=64, width=64, num_inference_steps=1,
                generator=torch.Generator("cpu").manual_seed(1), guidance_scale=7.0,
                output_type="pt")  # fmt: skip
    with gpu.vae_takes_any_dtype(pipe.vae):
        images = pipe(**call).images
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()
    assert not vae_has_hooks(pipe.vae)  # removed on leaving: the engine's VAE is shared


def vae_has_hooks(vae: torch.nn.Module) -> bool:
    return any(m._forward_pre_hooks for m in vae.modules())


def test_bench_stores_full_size_models_in_fp16_and_loads_them(tmp_path: Path) -> None:
    """bench/gpu.py builds the random-weight models (on the GPU when there is one) and writes them in
    fp16, as real checkpoints are; here a tiny one takes the same path."""
    gpu = _bench_gpu()
    assert gpu.build_device(True) == "cuda" and gpu.build_device(False) == "cpu"
    model = gpu._stored(build_tiny("sd1", seed=0))
    for name in ("unet", "vae", "text_encoder"):
        params = list(getattr(model, name).parameters())
        assert {p.dtype for p in params} == {torch.float16} and {p.device.type for p in params} == {"cpu"}
    parts = load_model(save_single_file(model, tmp_path / "half.safetensors"), Precision())
    assert parts.unet.dtype == torch.float32  # loaded in the precision asked, whatever the file holds
