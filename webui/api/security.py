"""Cross-site request refusal and request-body limits, as one pure ASGI middleware over the whole app.

A browser on another site can make a user's browser POST to a local server (CSRF), and Gradio does not
refuse foreign or `null` Origins. So every state-changing request (POST, PUT, PATCH, DELETE) and every
websocket whose `Origin` is present but neither this server's own nor allowed by --cors-allow-origins,
or whose `Sec-Fetch-Site` is `cross-site`, gets 403. Clients that send no Origin (curl, Python) pass.
Bodies larger than the limit get 413: at once from Content-Length, else while they stream in.
CORS answers only allowed origins: Gradio reflects any `http://localhost:*` Origin (and on a LAN any
Origin at all) into `Access-Control-Allow-Origin` with credentials, so every `Access-Control-*` header
is dropped from answers to a request whose Origin is neither this server's own nor allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

from webui.api.auth import ASGIApp, Message, Receive, Scope, Send

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit} bytes)")


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with the default port dropped; None for `null` or junk."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        out.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def own_origin(scope: Scope, headers: Mapping[str, str]) -> str | None:
    """The origin a same-site page of this server would send, from the scheme and the Host header."""
    host = headers.get("host")
    if not host:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
    return normalize_origin(f"{scheme}://{host}")


def cross_site_reason(scope: Scope, allowed: Iterable[str], *, any_method: bool = False) -> str | None:
    """Why this request must be refused as cross-site, or None when it may proceed. Only
    state-changing methods are checked, unless `any_method` (logout changes state even by GET)."""
    safe = scope.get("method", "GET").upper() not in UNSAFE_METHODS
    if scope["type"] == "http" and safe and not any_method:
        return None
    headers = _headers(scope)
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "cross-site request refused (Sec-Fetch-Site: cross-site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    normal = normalize_origin(origin)
    if normal is not None and (normal == own_origin(scope, headers) or normal in allowed):
        return None
    return f"cross-site request refused: Origin {origin[:200]!r} is not allowed (see --cors-allow-origins)"


class SecurityMiddleware:
    """403 for cross-site state-changing requests and websockets, 413 for oversized bodies."""

    def __init__(self, app: ASGIApp, *, allowed_origins: Iterable[str] = (), max_body_bytes: int) -> None:
        self.app = app
        self.allowed = frozenset(o for o in (normalize_origin(x) for x in allowed_origins) if o)
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = cross_site_reason(scope, self.allowed)
        if reason is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            else:
                await _json(send, 403, {"detail": reason})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if not self.origin_allowed(scope):
            send = _without_cors(send)
        length = _headers(scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _json(send, 400, {"detail": "bad Content-Length header"})
                return
            if int(length) > self.max_body:
                await _json(send, 413, {"detail": f"request body too large (limit {self.max_body} bytes)"})
                return
        await self._limited(scope, receive, send)

    def origin_allowed(self, scope: Scope) -> bool:
        """True without an Origin, or for this server's own origin or an allowed one."""
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is None:
            return True
        normal = normalize_origin(origin)
        return normal is not None and (normal == own_origin(scope, headers) or normal in self.allowed)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await _json(send, 413, {"detail": e.detail})


def _without_cors(send: Send) -> Send:
    async def filtered(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")
            ]
            message = {**message, "headers": headers}
        await send(message)

    return filtered


async def _json(send: Send, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
