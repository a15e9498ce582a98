"""The browser login (server-side session cookie) of the auth middleware, without a browser."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webui.api.auth import (
    COOKIE_NAME,
    LOGIN_PATH,
    BasicAuthMiddleware,
    safe_next,
    scope_user,
)
from webui.api.sessions import SessionStore

USERS = {"ann": "s3cret", "bob": "pw"}


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"user": scope_user(request.scope, "-")})


def _client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/x", _echo), Route("/", _echo)])
    wrapped: Any = BasicAuthMiddleware(app, USERS, delay=0.0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://127.0.0.1:7860")


def test_sessions_live_on_the_server_expire_and_can_be_revoked() -> None:
    store = SessionStore(None, 60)
    token = store.create("ann", now=1000)
    assert store.user(token, now=1030) == "ann"
    assert store.user(token, now=1061) is None  # expired (and swept)
    a, b = store.create("ann"), store.create("ann")
    ids = [s.id for s in store.list("ann")]
    assert len(ids) == 2 and store.id_of(a) in ids and a not in repr(store.list("ann"))
    assert not store.revoke("bob", store.id_of(a) or "")  # not bob's
    assert store.revoke("ann", store.id_of(a) or "") and store.user(a) is None and store.user(b) == "ann"
    assert store.revoke_token(b) and store.user(b) is None
    assert store.user("garbage") is None and store.user(None) is None and store.user("x" * 5000) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/", "/"), ("/?__theme=dark", "/?__theme=dark"), ("//evil.example/", "/"),
     ("https://evil.example", "/"),
     ("/\\evil", "/"), ("", "/"), (None, "/"), ("/a b", "/")],
)  # fmt: skip
def test_after_login_only_local_paths(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_pages_redirect_to_login_and_the_cookie_lets_the_browser_in() -> None:
    asyncio.run(_login_flow())


async def _login_flow() -> None:
    async with _client() as c:
        page = await c.get("/x", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 303 and page.headers["location"] == f"{LOGIN_PATH}?next=/x"
        api = await c.get("/x", headers={"Accept": "application/json"})
        assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Basic")
        form = await c.get(LOGIN_PATH, params={"next": "/x"})
        assert form.status_code == 200 and "name='password'" in form.text and "value='/x'" in form.text
        bad = await c.post(LOGIN_PATH, data={"username": "ann", "password": "nope", "next": "/x"})
        assert bad.status_code == 401 and COOKIE_NAME not in bad.headers.get("set-cookie", "")
        good = await c.post(LOGIN_PATH, data={"username": "ann", "password": "s3cret", "next": "/x"})
        assert good.status_code == 303 and good.headers["location"] == "/x"
        cookie = good.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        me = await c.get("/x", headers={"Cookie": f"{COOKIE_NAME}={token}"})
        assert me.status_code == 200 and me.json() == {"user": "ann"}
        forged = token[:-1] + ("1" if token.endswith("0") else "0")  # a different last digit of the MAC
        tampered = await c.get("/x", headers={"Cookie": f"{COOKIE_NAME}={forged}", "Accept": "*/*"})
        assert tampered.status_code == 401
        out = await c.get("/logout-sfumato", headers={"Cookie": f"{COOKIE_NAME}={token}"})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        after = await c.get("/x", headers={"Cookie": f"{COOKIE_NAME}={token}", "Accept": "*/*"})
        assert after.status_code == 401  # the session ended on the server, not just in the browser


def test_login_page_escapes_the_next_path_and_refuses_huge_forms() -> None:
    asyncio.run(_escapes())


async def _escapes() -> None:
    async with _client() as c:
        form = await c.get(LOGIN_PATH, params={"next": "/'><script>alert(1)</script>"})
        assert "<script>alert(1)" not in form.text
        big = await c.post(
            LOGIN_PATH,
            content=b"username=" + b"a" * 20_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert big.status_code == 401
