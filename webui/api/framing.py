"""No framing by other sites (clickjacking): every HTTP answer says so, the studio and login page included.

`X-Frame-Options: DENY` for older browsers and `Content-Security-Policy: frame-ancestors 'none'` for the
rest, added by one pure ASGI middleware over the whole app unless a route already set its own.
"""

from __future__ import annotations

from webui.api.auth import ASGIApp, Message, Receive, Scope, Send

FRAME_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))


class FrameGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in FRAME_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, guarded)
