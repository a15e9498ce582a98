"""Running out of memory (a GPU's usual failure, simulated here by raising torch's own error from a hook on
a real model) is handled the same way wherever it happens: the VAE decode falls back to tiles only after
the failed call's activations are released, and a batch that would not fit is decoded picture by picture;
an out-of-memory error in the compiled denoiser fails that job without writing the compiler off, and one
in an extension's hook fails the job instead of skipping the extension;
`devices.is_out_of_memory` recognises the error however it is raised."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from webui.core.config import AppConfig
from webui.core.denoiser_compile import CACHE_ENV, DenoiserCompiler
from webui.core.devices import is_out_of_memory
from webui.core.engine import Engine
from webui.core.jobs.worker import execute
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny
from webui.core.sampling.loop import CancelToken
from webui.core.tasks import vae_tiles
from webui.core.tasks.images import decode
from webui.core.tasks.vae_tiles import AUTO, VaeTiling, decode_tiled
from webui.core.types import Txt2ImgRequest

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB"


@pytest.fixture(scope="module")
def sd_vae() -> Any:
    return build_tiny("sd1", seed=0).vae


def _latents(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(3))


def test_out_of_memory_is_recognised_as_torch_cuda_cudnn_cublas_the_cpu_and_a_wrapper_raise_it() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError(OOM))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8"))
    try:
        try:
            raise torch.OutOfMemoryError(OOM)
        except torch.OutOfMemoryError as inner:
            raise ValueError("the extension's network failed") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an error torch raises for memory


@torch.no_grad()
@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_a_decode_out_of_memory_tiles_after_the_failed_call_is_released(sd_vae: Any, error: type) -> None:
    """The untiled decode runs out of memory in its middle block: the tiled decode that follows starts
    with the failed call's activations freed (inside the except block its traceback would still hold
    them, and on a GPU the tiled pass would then run out of memory too), and gives the tiled pictures."""
    z = _latents()
    failed: list[weakref.ref[torch.Tensor]] = []
    freed_when_tiling: list[bool] = []

    def first_call_fails(_m: Any, _args: Any, output: torch.Tensor) -> None:
        if not failed:
            failed.append(weakref.ref(output))
            raise error(OOM)
        freed_when_tiling.append(failed[0]() is None)

    handle = sd_vae.decoder.mid_block.register_forward_hook(first_call_fails)
    try:
        out = decode(sd_vae, z)
    finally:
        handle.remove()
    assert freed_when_tiling == [True]  # the tiled pass ran once, after the failed activations went
    assert torch.equal(out, decode_tiled(sd_vae, z / sd_vae.config.scaling_factor, AUTO))


@torch.no_grad()
def test_out_of_memory_with_tiling_off_or_another_error_is_raised(sd_vae: Any) -> None:
    def fails(_m: Any, _args: Any, _output: Any) -> None:
        raise errors[0]

    handle = sd_vae.decoder.mid_block.register_forward_hook(fails)
    try:
        errors = [torch.OutOfMemoryError(OOM)]
        with pytest.raises(torch.OutOfMemoryError):
            decode(sd_vae, _latents(), VaeTiling("off"))
        errors = [RuntimeError("Expected all tensors to be on the same device")]
        with pytest.raises(RuntimeError, match="same device"):
            decode(sd_vae, _latents())
    finally:
        handle.remove()


@torch.no_grad()
def test_a_batch_that_would_not_fit_at_once_is_decoded_picture_by_picture(sd_vae: Any) -> None:
    """`auto` weighs the whole batch: a batch whose untiled decode needs more than the free memory (this
    machine's available RAM for a CPU VAE) is decoded one picture at a time, untiled, as each one fits."""
    one = vae_tiles.untiled_bytes(sd_vae, 128, 128)
    free = vae_tiles.free_bytes(torch.device("cpu"))
    assert free is not None and one < free
    too_many = 2 * free // one + 2
    assert not AUTO.wanted(sd_vae, 128, 128) and not AUTO.wanted(sd_vae, 128, 128, batch=2)
    assert AUTO.wanted(sd_vae, 128, 128, batch=too_many)
    assert VaeTiling("on").wanted(sd_vae, 128, 128, batch=1)
    assert not VaeTiling("off").wanted(sd_vae, 128, 128, batch=too_many)


class _Report:
    def progress(self, info: Any, preview_png: bytes | None) -> None:
        pass

    def images(self, images: Any) -> None:
        pass


def test_out_of_memory_in_the_compiled_denoiser_fails_that_job_and_the_next_runs_compiled(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    """--compile: the compiled UNet runs out of memory on its first call. That job fails with the worker's
    out-of-memory advice, as it would uncompiled; the compiler is not written off (no "ran uncompiled"
    warning) and the next job runs through the compiled graph. A backend that runs dynamo's graph as it
    is stands in for inductor (cheap)."""
    saved = os.environ.pop(CACHE_ENV, None)
    calls = [0]

    def graph_as_is(gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        def run(*args: Any) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise torch.OutOfMemoryError(OOM)
            return gm.forward(*args)

        return run

    try:
        config = AppConfig.for_data_dir(
            tiny_data_dir, outputs_dir=tmp_path / "out", cache_dir=tmp_path / "cache", compile=True
        )
        manager = ModelManager(config, Precision())
        manager.refresh()
        engine = Engine(config, manager)
        engine.compiler = DenoiserCompiler(tmp_path / "cache", backend=graph_as_is)
        request = Txt2ImgRequest(
            prompt="a red cube",
            checkpoint="tiny-sd1",
            steps=2,
            width=64,
            height=64,
            seed=11,
            save_images=False,
        )
        failed = execute(engine, request, CancelToken(), results_dir=tmp_path, report=_Report())
        assert failed.error is not None and failed.error.startswith("out of memory"), failed.error
        assert "20.00 GiB" in failed.error and "--medvram" in failed.error
        before = calls[0]
        done = execute(engine, request, CancelToken(), results_dir=tmp_path, report=_Report())
    finally:
        os.environ.pop(CACHE_ENV, None)
        if saved is not None:
            os.environ[CACHE_ENV] = saved
    assert done.error is None and len(done.images) == 1
    assert calls[0] > before  # the compiled graph ran the second job
    assert not [w for i in done.images for w in i.warnings if "--compile" in w]


OOM_ONCE = """
import torch
from webui.plugins.api import hookimpl

CALLS = []

def _maybe_fail(where):
    CALLS.append(where)
    if CALLS.count(where) == 1 and where == FAIL_IN:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

@hookimpl
def before_model(state):
    _maybe_fail("before_model")

@hookimpl
def after_decode(images):
    _maybe_fail("after_decode")
    return images
"""


@pytest.mark.parametrize("hook", ["before_model", "after_decode"])
def test_out_of_memory_in_an_extension_hook_fails_the_job_instead_of_skipping_the_extension(
    tiny_data_dir: Path, tmp_path: Path, hook: str
) -> None:
    """An extension's hook runs out of memory (its ControlNet on the GPU, a detailer's sub-pass): the job
    fails with the worker's advice, not goes on without the extension (a picture without its control or
    detail, and a line blaming the extension); the next job runs with it."""
    from webui.plugins.discovery import discover
    from webui.plugins.host import PluginHost

    ext = tmp_path / "extensions" / "oom_once"
    ext.mkdir(parents=True)
    (ext / "extension.toml").write_text(
        'name = "oom_once"\nversion = "0.1"\ndescription = "test"\napi_version = "2.0"\nentry = "main"\n'
    )
    (ext / "main.py").write_text(f"FAIL_IN = {hook!r}\n" + OOM_ONCE)
    host = PluginHost.load(discover([(tmp_path / "extensions", "user")]), data_dir=tmp_path)
    config = AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path / "out")
    manager = ModelManager(config, Precision())
    manager.refresh()
    engine = Engine(config, manager, host)
    request = Txt2ImgRequest(
        prompt="a red cube", checkpoint="tiny-sd1", steps=2, width=64, height=64, seed=11, save_images=False
    )
    failed = execute(engine, request, CancelToken(), results_dir=tmp_path, report=_Report())
    assert failed.error is not None and failed.error.startswith("out of memory"), failed.error
    assert "20.00 GiB" in failed.error and not failed.images
    calls = host.extension("oom_once").module.CALLS  # type: ignore[union-attr]
    before = len(calls)
    done = execute(engine, request, CancelToken(), results_dir=tmp_path, report=_Report())
    assert done.error is None and len(done.images) == 1 and done.images[0].warnings == ()
    assert calls[before:].count(hook) >= 1  # the extension ran in the next job
