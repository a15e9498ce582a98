"""Without a login, each browser still has its own identity: a signed cookie set on its first page.

The cookie (`sfumato_browser`: a random id and its HMAC-SHA256 under a secret kept in the data folder's
cache, so a restart keeps it valid) makes the request's user `browser-<id>`, recorded on the scope where
the login middleware records a logged-in user; the jobs API, the A1111 API and the studio read it from
there. So two browsers neither see nor cancel each other's jobs. A client without the cookie (curl,
scripts) stays the shared local user "anonymous". The cookie is set only on page requests (GET with
Accept: text/html), never on API answers, so scripts that keep cookies keep working as before.
Identities are not roles: without a login every local user may still change shared state.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from pathlib import Path

from webui.api.auth import USER_STATE_KEY, ASGIApp, Message, Receive, Scope, Send, cookies_of, header_of

COOKIE = "sfumato_browser"
PREFIX = "browser-"
SECRET_FILE = "browser-secret"
MAX_AGE = 400 * 24 * 3600  # browsers cap cookie lifetimes at about 400 days


def identity_secret(cache_dir: Path) -> bytes:
    """The signing secret, kept in <cache>/browser-secret (made on first use, owner-only)."""
    from webui.core.atomic import write_atomic

    path = cache_dir / SECRET_FILE
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 64:
            return bytes.fromhex(text)
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, key.hex().encode("ascii"))
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return key


def sign(browser_id: str, secret: bytes) -> str:
    mac = hmac.new(secret, browser_id.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{browser_id}.{mac}"


def verify(value: str | None, secret: bytes) -> str | None:
    """The browser id a cookie value proves, or None (missing, malformed or forged)."""
    if not value or value.count(".") != 1 or len(value) > 100:
        return None
    browser_id = value.split(".")[0]
    if not browser_id.isalnum() or not hmac.compare_digest(sign(browser_id, secret), value):
        return None
    return browser_id


class BrowserIdentityMiddleware:
    """Record each browser's own user name on the scope (only used when no login is configured)."""

    def __init__(self, app: ASGIApp, *, secret: bytes) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        browser_id = verify(cookies_of(scope).get(COOKIE), self.secret)
        new_cookie: bytes | None = None
        page = scope["type"] == "http" and scope.get("method") == "GET"
        if browser_id is None and page and "text/html" in (header_of(scope, b"accept") or ""):
            browser_id = secrets.token_hex(16)
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            flags = f"Path=/; HttpOnly; SameSite=Lax; Max-Age={MAX_AGE}{secure}"
            new_cookie = f"{COOKIE}={sign(browser_id, self.secret)}; {flags}".encode()
        if browser_id is None:
            await self.app(scope, receive, send)
            return
        state = dict(scope.get("state") or {})
        state[USER_STATE_KEY] = PREFIX + browser_id
        inner = {**scope, "state": state}
        if new_cookie is None:
            await self.app(inner, receive, send)
            return

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"set-cookie", new_cookie)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(inner, receive, with_cookie)
