"""Running out of memory (a GPU's usual failure, simulated here by raising torch's own error from a hook on
a real model) is handled the same way wherever it happens: the VAE decode falls back to tiles only after
the failed call's activations are released, and a batch that would not fit is decoded picture by picture;
`devices.is_out_of_memory` recognises the error however it is raised."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch

from webui.core.devices import is_out_of_memory
from webui.core.models.tiny import build_tiny
from webui.core.tasks import vae_tiles
from webui.core.tasks.images import decode
from webui.core.tasks.vae_tiles import AUTO, VaeTiling, decode_tiled

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
