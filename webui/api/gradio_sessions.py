"""Gradio's session hashes bound to the user who first used them: a pure ASGI check.

A Gradio page picks a random `session_hash` and names it when it joins the queue
(`POST /gradio_api/queue/join`), reads its results (`GET /gradio_api/queue/data?session_hash=`), sends
heartbeats and cancels. Gradio itself does not tie the hash to a user, so anybody who learns one could
read that page's results as they stream. Here the first request that names a hash binds it to the
request's user (the login, the browser's own identity, or the shared local user); a request naming a
hash bound to somebody else gets 404 and reaches nothing. Bindings are kept in memory for the most
recent hashes (a server restart forgets them along with Gradio's own sessions).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from urllib.parse import parse_qs

from webui.api.auth import ASGIApp, Message, Receive, Scope, Send, scope_user

PREFIX = "/gradio_api"
_BODY_ROUTES = (f"{PREFIX}/queue/join", f"{PREFIX}/cancel")
_HEARTBEAT = f"{PREFIX}/heartbeat/"
_DATA = f"{PREFIX}/queue/data"
MAX_BINDINGS = 100_000
_MAX_BODY = 4 * 2**20  # a join names its inputs; files travel separately (upload)


class SessionBinder:
    """session_hash -> user, most recent MAX_BINDINGS kept."""

    def __init__(self, limit: int = MAX_BINDINGS) -> None:
        self.limit = limit
        self._owners: OrderedDict[str, str] = OrderedDict()

    def claim(self, session_hash: str, user: str) -> bool:
        """Bind an unbound hash to `user`; True when `user` holds it."""
        owner = self._owners.get(session_hash)
        if owner is None:
            self._owners[session_hash] = user
            if len(self._owners) > self.limit:
                self._owners.popitem(last=False)
            return True
        self._owners.move_to_end(session_hash)
        return owner == user


class SessionBindingMiddleware:
    """404 for a Gradio queue, heartbeat or cancel request naming another user's session hash."""

    def __init__(self, app: ASGIApp, *, default_user: str) -> None:
        self.app = app
        self.default_user = default_user
        self.binder = SessionBinder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        user = scope_user(scope, self.default_user)
        if path == _DATA or path.startswith(_HEARTBEAT):
            if path == _DATA:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                session = (query.get("session_hash") or [""])[0]
            else:
                session = path[len(_HEARTBEAT) :]
            if session and not self.binder.claim(session, user):
                await _answer(send, 404, "session not found")
                return
            await self.app(scope, receive, send)
            return
        if path not in _BODY_ROUTES or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        messages, body = await _buffer(receive)
        if body is None:
            await _answer(send, 413, f"request too large for {path} (limit {_MAX_BODY} bytes)")
            return
        try:
            session = json.loads(body).get("session_hash") if body else None
        except (ValueError, AttributeError):
            session = None
        if isinstance(session, str) and session and not self.binder.claim(session, user):
            await _answer(send, 404, "session not found")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _buffer(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's messages (to pass on unchanged) and its body (None past _MAX_BODY bytes)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, b""
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > _MAX_BODY:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
