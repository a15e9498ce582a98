"""Login for the whole server: A1111's `user:pass` specs and one pure ASGI HTTP Basic middleware.

The middleware sits over everything (our routes, /docs, /openapi.json, static files, a mounted Gradio
UI, websockets), so no route can be reached without one of the configured users. Passwords are compared
in constant time, and failed attempts from one client are slowed down (without blocking the event loop).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_STATE_KEY = "sfumato_user"
_MAX_TRACKED_CLIENTS = 4096


class AuthSpecError(ValueError):
    """A malformed --api-auth / --gradio-auth / --gradio-auth-path value; the message names the flag."""


def parse_users(spec: str, flag: str) -> dict[str, str]:
    """A1111's `user:pass[,user2:pass2]` -> {user: password}. A password may contain ':'."""
    users: dict[str, str] = {}
    for raw in spec.replace("\n", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise AuthSpecError(f"{flag}: expected user:password entries separated by commas, got {item!r}")
        users[user.strip()] = password
    if not users:
        raise AuthSpecError(f"{flag}: no user:password entries given")
    return users


def users_from_flags(
    api_auth: str | None, gradio_auth: str | None, gradio_auth_path: str | None
) -> dict[str, str]:
    """The union of the users of all three flags (one login scheme for the whole server)."""
    users: dict[str, str] = {}
    if gradio_auth_path:
        path = Path(gradio_auth_path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AuthSpecError(f"--gradio-auth-path: cannot read {path}: {e.strerror or e}") from e
        users.update(parse_users(text, "--gradio-auth-path"))
    if gradio_auth:
        users.update(parse_users(gradio_auth, "--gradio-auth"))
    if api_auth:
        users.update(parse_users(api_auth, "--api-auth"))
    return users


def check_basic(header: str | None, users: Mapping[str, str]) -> str | None:
    """The user an `Authorization: Basic ...` header proves, or None. Constant time per user."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    given_user, sep, given_password = decoded.partition(":")
    if not sep:
        return None
    found: str | None = None
    given_u, given_p = given_user.encode(), given_password.encode()
    for user, password in users.items():  # every user compared, match or not
        user_ok = hmac.compare_digest(given_u, user.encode())
        password_ok = hmac.compare_digest(given_p, password.encode())
        if user_ok and password_ok:
            found = user
    return found


def scope_user(scope: Mapping[str, Any], default: str) -> str:
    """The authenticated user recorded on a request scope by BasicAuthMiddleware, else `default`."""
    state = scope.get("state") or {}
    user = state.get(USER_STATE_KEY) if isinstance(state, Mapping) else None
    return user if isinstance(user, str) else default


class _Backoff:
    """Per-client delay after failed logins: base, 2*base, 4*base, ... up to cap; reset on success."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, client: str) -> float:
        count, last = self._failures.get(client, (0, 0.0))
        if count and time.monotonic() - last > 15 * 60:
            count = 0
        self._failures[client] = (count + 1, time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > _MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)
        return min(self.base * 2**count, self.cap) if self.base > 0 else 0.0

    def success(self, client: str) -> None:
        self._failures.pop(client, None)


class BasicAuthMiddleware:
    """Require HTTP Basic credentials of a configured user on every HTTP and websocket request."""

    def __init__(
        self,
        app: ASGIApp,
        users: Mapping[str, str],
        *,
        delay: float = 0.5,
        delay_max: float = 8.0,
        realm: str = "Sfumato",
    ) -> None:
        self.app = app
        self.users = dict(users)
        self.realm = realm
        self._backoff = _Backoff(delay, delay_max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        client = (scope.get("client") or ("?", 0))[0]
        user = check_basic(header, self.users)
        if user is None:
            await asyncio.sleep(self._backoff.delay(str(client)))
            await self._refuse(scope, send, header is not None)
            return
        self._backoff.success(str(client))
        state = dict(scope.get("state") or {})
        state[USER_STATE_KEY] = user
        await self.app({**scope, "state": state}, receive, send)

    async def _refuse(self, scope: Scope, send: Send, attempted: bool) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "authentication required"})
            return
        detail = "wrong user name or password" if attempted else "authentication required"
        body = b'{"detail": "' + detail.encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", f'Basic realm="{self.realm}", charset="UTF-8"'.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
