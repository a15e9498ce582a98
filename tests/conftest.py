"""Shared test setup: offline environment, a guard against stray network traffic, tiny model files."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from webui import offline

offline.apply()  # before diffusers/transformers/gradio are imported by any test module

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may only contact loopback; refused {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Single-file tiny checkpoints of every fixture architecture, in an A1111-style data folder.

    Built once per test session: {arch: path}. The data folder is `path.parents[2]`.
    """
    from webui.core.models.tiny import ARCHES, build_tiny, save_single_file

    data = tmp_path_factory.mktemp("a1111")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    out = {}
    for arch in ARCHES:
        out[arch] = save_single_file(build_tiny(arch, seed=0), ckpts / f"tiny-{arch}.safetensors")
    return out


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_files: dict[str, Path]) -> Path:
    return next(iter(tiny_files.values())).parents[2]
