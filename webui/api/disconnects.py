"""A client that goes away in the middle of a request (a browser tab closed during an upload, a dropped
link) is one line in the log, not a traceback: there is nobody left to answer, and nothing is wrong with
the server. Any other error still propagates (and is logged in full)."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("sfumato.api")


class DisconnectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            log.info("%s went away during %s %s", client[0], scope.get("method"), scope.get("path"))
