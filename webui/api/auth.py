"""Login for the whole server: A1111's `user:pass` specs and one pure ASGI login middleware.

The middleware sits over everything (our routes, /docs, /openapi.json, static files, a mounted Gradio
UI, websockets), so no route can be reached without one of the configured users (webui.api.accounts:
the users file's and the U:P flags'). Three ways in:

- HTTP Basic (scripts, API clients): `Authorization: Basic ...` on every request (a users-file password
  is checked with scrypt off the event loop, on a few threads of its own, then remembered);
- an API key (scripts): `Authorization: Bearer sfk_...`, wherever Basic is taken; a wrong, unknown or
  revoked key counts as a failed login of the address (so guessing keys is throttled too);
- a login page for browsers (`/login-sfumato`): a form that sets an HttpOnly, SameSite=Lax session
  cookie (`sfumato_session`), a random key to a server-side session (webui.api.sessions): logging out
  deletes it, so the old cookie opens nothing; each login starts a new one (and ends the one the browser
  had). A page request (GET, Accept: text/html) without a login is sent there; everything else gets 401
  with a Basic challenge.

Passwords are compared in constant time. After a failed login, further guesses from that address or
at that user name get 429 (Retry-After) before they are evaluated, for a delay that doubles per failure
(webui.api.throttle). `/logout-sfumato` ends the session and clears the cookie. A cross-site POST to the
login page (login CSRF) and a cross-site logout (GET or POST) get 403 (webui.api.security). CORS
preflights from a --cors-allow-origins origin pass without a login (browsers send none on them): the
CORS middleware answers them and no route runs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio
import anyio.to_thread

from webui.api.accounts import Accounts
from webui.api.sessions import SessionStore
from webui.api.throttle import LoginThrottle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_STATE_KEY = "sfumato_user"
LOGIN_PATH = "/login-sfumato"
LOGOUT_PATH = "/logout-sfumato"
COOKIE_NAME = "sfumato_session"
SESSION_SECONDS = 7 * 24 * 3600
_MAX_FORM_BYTES = 8192
HASHING_THREADS = 4  # password checks (scrypt) running at once


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


AUTH_ENV = "SFUMATO_AUTH"  # user:pass entries, so they need not appear in the process list


def users_from_flags(
    api_auth: str | None,
    gradio_auth: str | None,
    gradio_auth_path: str | None,
    env_auth: str | None = None,
) -> dict[str, str]:
    """The union of the users of all three flags and of the SFUMATO_AUTH environment variable's value
    (`env_auth`): one login scheme for the whole server."""
    users: dict[str, str] = {}
    if env_auth:
        users.update(parse_users(env_auth, AUTH_ENV))
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
    given = basic_credentials(header) if header else None
    if given is None:
        return None
    given_user, given_password = given
    found: str | None = None
    given_u, given_p = given_user.encode(), given_password.encode()
    for user, password in users.items():  # every user compared, match or not
        user_ok = hmac.compare_digest(given_u, user.encode())
        password_ok = hmac.compare_digest(given_p, password.encode())
        if user_ok and password_ok:
            found = user
    return found


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header, or None when it is not one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def bearer_token(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (an API key), or None when it is not one."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def basic_user_name(header: str) -> str:
    """The user name an `Authorization: Basic` header claims ("" when it names none)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


def scope_user(scope: Mapping[str, Any], default: str) -> str:
    """The authenticated user recorded on a request scope by BasicAuthMiddleware, else `default`."""
    state = scope.get("state") or {}
    user = state.get(USER_STATE_KEY) if isinstance(state, Mapping) else None
    return user if isinstance(user, str) else default


def cookies_of(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                if name:
                    out[name] = val
    return out


def header_of(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 33 for c in target):
        return "/"
    return target


def login_page(message: str = "", next_path: str = "/") -> bytes:
    note = f"<p class='err'>{html.escape(message)}</p>" if message else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Sfumato: log in</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='color-scheme' content='light dark'><style>"
        # the studio's look (webui.ui.studio CSS): its font, card borders, AA orange primary button
        ":root{--bg:#fff;--card:#fff;--line:#e5e7eb;--text:#1f2937;--sub:#6b7280;--field:#fff}"
        "@media (prefers-color-scheme:dark){:root{--bg:#0b0f19;--card:#1f2937;--line:#374151;"
        "--text:#f3f4f6;--sub:#9ca3af;--field:#111827}}"
        "body{font-family:'Source Sans Pro',ui-sans-serif,system-ui,sans-serif;background:var(--bg);"
        "color:var(--text);display:flex;justify-content:center;padding-top:12vh;margin:0}"
        "form{display:flex;flex-direction:column;gap:12px;width:min(340px,90vw);background:var(--card);"
        "border:1px solid var(--line);border-radius:8px;padding:20px 24px}"
        "h2{margin:0 0 4px;font-size:22px}label{display:flex;flex-direction:column;gap:4px;"
        "font-size:14px;color:var(--sub)}"
        "input{font:inherit;font-size:16px;padding:8px 10px;border-radius:6px;border:1px solid var(--line);"
        "background:var(--field);color:var(--text)}input:focus{outline:2px solid #c2410c;outline-offset:1px}"
        "button{font:inherit;font-size:16px;font-weight:600;padding:10px;border-radius:6px;border:none;"
        "background:#c2410c;color:#fff;cursor:pointer}button:hover{background:#9a3412}"
        ".err{color:#b91c1c;margin:0}@media (prefers-color-scheme:dark){.err{color:#fca5a5}}"
        "</style></head><body>"
        f"<form method='post' action='{LOGIN_PATH}'><h2>Sfumato</h2>{note}"
        f"<input type='hidden' name='next' value='{html.escape(next_path, quote=True)}'>"
        "<label>User name <input name='username' id='username' autocomplete='username' required></label>"
        "<label>Password <input name='password' id='password' type='password' "
        "autocomplete='current-password' "
        "required></label><button type='submit' id='login'>Log in</button></form></body></html>"
    ).encode()


class BasicAuthMiddleware:
    """Require a configured user (HTTP Basic or the login page's session cookie) on every request."""

    def __init__(
        self,
        app: ASGIApp,
        users: Mapping[str, str] | None = None,
        *,
        accounts: Accounts | None = None,
        delay: float = 0.5,
        delay_max: float = 30.0,
        realm: str = "Sfumato",
        sessions: SessionStore | None = None,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        from webui.api.security import normalize_origin

        self.app = app
        self.accounts = accounts if accounts is not None else Accounts(users or {})
        self.realm = realm
        self.sessions = sessions or SessionStore(None, SESSION_SECONDS)
        self.allowed = frozenset(o for o in (normalize_origin(x) for x in allowed_origins) if o)
        self._throttle = LoginThrottle(delay, delay_max, is_user=self.accounts.exists)
        self._hashing = anyio.CapacityLimiter(HASHING_THREADS)  # scrypt off the loop, never all threads

    async def _check_password(self, user: str, password: str) -> str | None:
        return await anyio.to_thread.run_sync(
            self.accounts.check_password, user, password, limiter=self._hashing
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        client = str((scope.get("client") or ("?", 0))[0])
        if scope["type"] == "http" and path in (LOGIN_PATH, LOGOUT_PATH):
            await self._login_route(scope, receive, send, client)
            return
        if self._allowed_preflight(scope):  # browsers never send credentials on a CORS preflight
            await self.app(scope, receive, send)
            return
        header = header_of(scope, b"authorization")
        if header is None:
            self.accounts.refresh()  # a users file changed on disk first: who it logged out is out here too
            user = self.sessions.user(cookies_of(scope).get(COOKIE_NAME))
            user = user if user is not None and self.accounts.exists(user) else None
        else:
            token = bearer_token(header)
            claimed = "" if token is not None else basic_user_name(header)
            wait = self._throttle.retry_after(client, claimed)
            if wait > 0:  # blocked: the guess is not even evaluated
                await self._too_many(scope, send, wait)
                return
            if token is not None:  # an API key: a wrong one counts against the address
                user = await anyio.to_thread.run_sync(self.accounts.check_key, token, limiter=self._hashing)
                if user is None:
                    self._throttle.failure(client, "")
            else:
                given = basic_credentials(header)
                user = await self._check_password(*given) if given is not None else None
                if user is None:
                    self._throttle.failure(client, claimed)
                else:
                    self._throttle.success(client, user)
        if user is None:
            await self._refuse(scope, send, header is not None)
            return
        state = dict(scope.get("state") or {})
        state[USER_STATE_KEY] = user
        await self.app({**scope, "state": state}, receive, send)

    def _allowed_preflight(self, scope: Scope) -> bool:
        """A CORS preflight (OPTIONS with Access-Control-Request-Method) from a --cors-allow-origins
        origin: answered by the CORS middleware below, which runs no route."""
        from webui.api.security import normalize_origin

        if scope["type"] != "http" or scope.get("method") != "OPTIONS" or not self.allowed:
            return False
        if header_of(scope, b"access-control-request-method") is None:
            return False
        return normalize_origin(header_of(scope, b"origin") or "") in self.allowed

    async def _login_route(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        from webui.api.security import cross_site_reason

        secure = scope.get("scheme") == "https"
        logout = scope["path"] == LOGOUT_PATH
        reason = cross_site_reason(scope, self.allowed, any_method=logout)
        if reason is not None:  # login CSRF, or another site logging the user out
            detail = json.dumps({"detail": reason}).encode()
            await _send(send, 403, detail, [(b"content-type", b"application/json")])
            return
        old = cookies_of(scope).get(COOKIE_NAME)
        if logout:
            self.sessions.revoke_token(old)
            await _send(send, 303, b"", [(b"location", LOGIN_PATH.encode()), _cookie_header("", 0, secure)])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope.get("method") != "POST":
            next_path = safe_next((query.get("next") or ["/"])[0])
            await _send(send, 200, login_page("", next_path), _HTML)
            return
        body = await _read_body(receive, _MAX_FORM_BYTES)
        form = parse_qs(body.decode("utf-8", errors="replace")) if body is not None else {}
        claimed = (form.get("username") or [""])[0]
        next_path = safe_next((form.get("next") or ["/"])[0])
        wait = self._throttle.retry_after(client, claimed)
        if wait > 0:  # blocked: the password is not even compared
            message = f"Too many failed logins: try again in {math.ceil(wait)} s."
            headers = [*_HTML, (b"retry-after", str(math.ceil(wait)).encode())]
            await _send(send, 429, login_page(message, next_path), headers)
            return
        user = await self._check_password(claimed, (form.get("password") or [""])[0])
        if user is None:
            self._throttle.failure(client, claimed)
            await _send(send, 401, login_page("Wrong user name or password.", next_path), _HTML)
            return
        self._throttle.success(client, user)
        self.sessions.revoke_token(old)  # a new session on every login: a planted cookie is worthless
        token = self.sessions.create(user)
        cookie = _cookie_header(token, int(self.sessions.seconds), secure)
        await _send(send, 303, b"", [(b"location", next_path.encode()), cookie])

    async def _too_many(self, scope: Scope, send: Send, wait: float) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "too many failed logins"})
            return
        seconds = math.ceil(wait)
        body = json.dumps(
            {"detail": f"too many failed logins: try again in {seconds} s", "retry_after": round(wait, 3)}
        ).encode()
        headers = [(b"retry-after", str(seconds).encode()), (b"content-type", b"application/json")]
        await _send(send, 429, body, headers)

    async def _refuse(self, scope: Scope, send: Send, attempted: bool) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "authentication required"})
            return
        accept = header_of(scope, b"accept") or ""
        if not attempted and scope.get("method") == "GET" and "text/html" in accept:
            target = scope.get("path", "/") or "/"
            qs = scope.get("query_string", b"").decode("latin-1")
            next_path = quote(safe_next(target + (f"?{qs}" if qs else "")), safe="/")
            await _send(send, 303, b"", [(b"location", f"{LOGIN_PATH}?next={next_path}".encode())])
            return
        detail = "wrong user name or password" if attempted else "authentication required"
        body = b'{"detail": "' + detail.encode() + b'"}'
        challenge = f'Basic realm="{self.realm}", charset="UTF-8"'.encode()
        await _send(
            send, 401, body, [(b"www-authenticate", challenge), (b"content-type", b"application/json")]
        )


_HTML = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]


def _cookie_header(token: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    flags = f"Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}" + ("; Secure" if secure else "")
    return b"set-cookie", f"{COOKIE_NAME}={token}; {flags}".encode()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    all_headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
