"""DNS-rebinding guard: refuse requests whose `Host` is not a name this server answers to.

A page on `evil.example` whose name is re-resolved to 127.0.0.1 makes the victim's browser talk to a
local server with `Host: evil.example`; everything else about the request looks same-origin. So every
HTTP request and websocket (before any login or route) must name an allowed host:

- always: `localhost`, `127.0.0.1`, `[::1]` (any port; `*.localhost` too, browsers keep it on loopback);
- the `--server-name` and every name in `--allowed-hosts` (comma list; `*` turns the check off);
- when the server is bound beyond loopback (`--listen`, or a non-loopback `--server-name`): any IP
  literal as well, so the machine's own addresses work. Host *names* (a LAN DNS name, a reverse proxy's
  public name) must be listed in `--allowed-hosts`.

A refused request gets 400 with a message naming the host and the flag; a websocket is closed (1008).
Requests without a Host header (HTTP/1.0 scripts; browsers always send one) pass.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

from webui.api.auth import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class HostSpecError(ValueError):
    """A malformed --allowed-hosts entry; the message names the flag."""


def host_name(host_header: str) -> str | None:
    """The name or address of a Host header, lower case, without port, brackets or a final dot."""
    value = host_header.strip().lower()
    if not value:
        return None
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        rest = value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return value[1:end]
    if value.count(":") > 1:  # a bare IPv6 address (flags; a Host header brackets it)
        return value
    name, sep, port = value.rpartition(":")
    if sep:
        if not port.isdigit():
            return None
        value = name
    return value.rstrip(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_allowed_hosts(spec: str | None, flag: str = "--allowed-hosts") -> frozenset[str]:
    """`a.example, b.lan:7860, *` -> {"a.example", "b.lan", "*"}; a port, if given, is ignored."""
    out: set[str] = set()
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        if item == "*":
            out.add("*")
            continue
        name = host_name(item)
        if name is None or "/" in item or any(c.isspace() for c in item):
            raise HostSpecError(f"{flag}: {item!r} is not a host name or address")
        out.add(name)
    return frozenset(out)


class HostPolicy:
    """Which Host headers this server accepts (see the module docstring)."""

    def __init__(self, allowed: Iterable[str] = (), *, bind_host: str = "127.0.0.1") -> None:
        names = {n for n in (host_name(a) if a != "*" else "*" for a in allowed) if n}
        bind = host_name(bind_host) or "127.0.0.1"
        self.any_host = "*" in names
        self.any_ip = not _is_loopback(bind)  # bound beyond loopback: the machine's addresses work
        if bind not in ("0.0.0.0", "::"):
            names.add(bind)
        self.names = frozenset(names - {"*"})

    def allows(self, host_header: str | None) -> bool:
        if host_header is None or self.any_host:
            return True
        name = host_name(host_header)
        if name is None:
            return False
        if _is_loopback(name) or name in self.names:
            return True
        return self.any_ip and _is_ip(name)


def refusal(host_header: str) -> str:
    shown = host_header[:200]
    return (
        f"Host {shown!r} is not allowed: this server answers to localhost, 127.0.0.1 and [::1], its "
        "--server-name and the names in --allowed-hosts (a guard against DNS rebinding). "
        f"If you reach it by this name, restart with --allowed-hosts {host_name(host_header) or shown}"
    )


class HostCheckMiddleware:
    """400 (websocket: close 1008) for a request whose Host this server does not answer to."""

    def __init__(self, app: ASGIApp, *, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
                break
        if self.policy.allows(host):
            await self.app(scope, receive, send)
            return
        message = refusal(host or "")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            return
        body = json.dumps({"detail": message, "error": "HostNotAllowed"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})
