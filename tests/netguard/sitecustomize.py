"""The tests' network guard: loopback only, and no name lookups but local ones.

pytest installs it in its own process (tests/conftest.py) and puts this folder first on PYTHONPATH with
SFUMATO_TEST_NETGUARD=1, so every Python process a test starts (servers, the CLI, workers, launch.py)
imports it as `sitecustomize` and is guarded too. A refused connection raises ConnectionRefusedError and
a refused lookup raises socket.gaierror, both naming the guard, before any packet leaves the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

MARK = "test network guard"
GUARD_DIR = os.path.dirname(os.path.abspath(__file__))
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _host_text(host: Any) -> str | None:
    if host is None:
        return None
    return host.decode("idna") if isinstance(host, bytes) else str(host)


def lookup_allowed(host: Any) -> bool:
    """Numeric addresses (the connect guard judges them), local names and this machine's own name."""
    name = _host_text(host)
    if name is None or name == "":
        return True
    name = name.strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        pass
    return name in _LOCAL_NAMES or name.endswith(".localhost") or name == socket.gethostname().lower()


def connect_allowed(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = _host_text(address[0]) or ""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard_connect(real: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not connect_allowed(address):
            raise ConnectionRefusedError(f"{MARK}: tests may only contact loopback; refused {address!r}")
        return real(self, address)

    connect.__wrapped__ = real  # type: ignore[attr-defined]
    return connect


def _guard_lookup(real: Callable[..., Any]) -> Callable[..., Any]:
    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not lookup_allowed(host):
            raise socket.gaierror(socket.EAI_NONAME, f"{MARK}: tests may not look up {host!r}")
        return real(host, *args, **kwargs)

    lookup.__wrapped__ = real  # type: ignore[attr-defined]
    return lookup


def installed() -> bool:
    return hasattr(socket.getaddrinfo, "__wrapped__")


def install() -> None:
    """Guard this process (idempotent)."""
    if installed():
        return
    socket.socket.connect = _guard_connect(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guard_connect(socket.socket.connect_ex)  # type: ignore[method-assign]
    socket.getaddrinfo = _guard_lookup(socket.getaddrinfo)
    socket.gethostbyname = _guard_lookup(socket.gethostbyname)
    socket.gethostbyname_ex = _guard_lookup(socket.gethostbyname_ex)


def uninstall() -> None:
    for owner, name in [
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
        (socket, "getaddrinfo"),
        (socket, "gethostbyname"),
        (socket, "gethostbyname_ex"),
    ]:
        current = getattr(owner, name)
        if hasattr(current, "__wrapped__"):
            setattr(owner, name, current.__wrapped__)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the guard on for a Python child: this folder first on its PYTHONPATH."""
    out = dict(env)
    paths = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != GUARD_DIR]
    out["PYTHONPATH"] = os.pathsep.join([GUARD_DIR, *paths])
    out["SFUMATO_TEST_NETGUARD"] = "1"
    return out


if os.environ.get("SFUMATO_TEST_NETGUARD") == "1":
    install()
