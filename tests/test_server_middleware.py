"""The two ASGI guards on their own: HTTP Basic login (specs, compare, backoff), cross-site/size guard."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webui.api.auth import (
    AuthSpecError,
    BasicAuthMiddleware,
    check_basic,
    parse_users,
    scope_user,
    users_from_flags,
)
from webui.api.security import SecurityMiddleware, normalize_origin


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"user": scope_user(request.scope, "-"), "bytes": len(body)})


def _app() -> Starlette:
    return Starlette(routes=[Route("/x", _echo, methods=["GET", "POST", "PUT", "DELETE"])])


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:7860")


# -- specs -------------------------------------------------------------------------------------------------


def test_parse_users_a1111_format() -> None:
    assert parse_users("a:1, b:2:3 ,", "--api-auth") == {"a": "1", "b": "2:3"}


@pytest.mark.parametrize("spec", ["alice", ":pw", "alice:", ",,", "a:1,bob"])
def test_malformed_spec_names_the_flag(spec: str) -> None:
    with pytest.raises(AuthSpecError, match="--gradio-auth"):
        parse_users(spec, "--gradio-auth")


def test_auth_file_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(AuthSpecError, match="--gradio-auth-path: cannot read"):
        users_from_flags(None, None, str(tmp_path / "missing.txt"))
    bad = tmp_path / "users.txt"
    bad.write_text("nocolon\n", encoding="utf-8")
    with pytest.raises(AuthSpecError, match="--gradio-auth-path"):
        users_from_flags(None, None, str(bad))


def test_check_basic() -> None:
    users = {"alice": "pw", "bob": "x:y"}
    assert check_basic(_basic("alice", "pw")["Authorization"], users) == "alice"
    assert check_basic(_basic("bob", "x:y")["Authorization"], users) == "bob"
    for header in (None, "", "Basic !!!", "Bearer abc", _basic("alice", "PW")["Authorization"]):
        assert check_basic(header, users) is None
    assert check_basic(_basic("eve", "pw")["Authorization"], users) is None
    assert check_basic("Basic " + base64.b64encode(b"alicepw").decode(), users) is None


# -- login middleware ----------------------------------------------------------------------------------------


def test_login_required_user_recorded_and_failures_block_the_next_guess() -> None:
    app = BasicAuthMiddleware(_app(), {"alice": "pw"}, delay=0.1, delay_max=0.4)

    async def go() -> None:
        async with _client(app) as c:
            r = await c.get("/x")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            waits = []
            for _ in range(4):
                r = await c.get("/x", headers=_basic("alice", "nope"))
                assert r.status_code == 401
                r = await c.get("/x", headers=_basic("alice", "pw"))  # blocked, right or not
                assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
                waits.append(r.json()["retry_after"])
                await asyncio.sleep(r.json()["retry_after"] + 0.02)
            assert waits[0] <= 0.1 < waits[1] <= 0.2 < waits[2] <= 0.4 and waits[3] <= 0.4  # doubles, capped
            r = await c.get("/x", headers=_basic("alice", "pw"))
            assert r.status_code == 200 and r.json()["user"] == "alice"
            r = await c.get("/x", headers=_basic("alice", "nope"))
            assert r.status_code == 401
            assert (await c.get("/x", headers=_basic("alice", "pw"))).json()["retry_after"] <= 0.1  # reset

    asyncio.run(go())


def test_failures_block_their_address_and_user_only() -> None:
    app = BasicAuthMiddleware(_app(), {"alice": "pw", "bob": "pw2"}, delay=5, delay_max=5)

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1234))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:7860")

    async def go() -> None:
        async with client("10.0.0.1") as one, client("10.0.0.2") as two:
            assert (await one.get("/x", headers=_basic("alice", "bad"))).status_code == 401
            assert (await one.get("/x", headers=_basic("bob", "pw2"))).status_code == 429  # same address
            assert (await two.get("/x", headers=_basic("alice", "pw"))).status_code == 429  # same user
            assert (await two.get("/x", headers=_basic("bob", "pw2"))).json()["user"] == "bob"
            assert (await one.get("/x")).status_code == 401  # no guess, no block: just the challenge

    asyncio.run(go())


# -- cross-site and size guard ---------------------------------------------------------------------------


def test_normalize_origin() -> None:
    assert normalize_origin("HTTP://LocalHost:80") == "http://localhost"
    assert normalize_origin("https://a.example:8443") == "https://a.example:8443"
    assert normalize_origin("null") is None and normalize_origin("file://") is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Origin": "http://127.0.0.1:7860"}, 200),
        ({"Origin": "https://ok.example"}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://127.0.0.1:3000"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:7860"}, 200),
    ],
)
def test_cross_site_posts_refused(headers: dict[str, str], status: int) -> None:
    app = SecurityMiddleware(_app(), allowed_origins=["https://ok.example"], max_body_bytes=1000)

    async def go() -> None:
        async with _client(app) as c:
            for method in ("POST", "PUT", "DELETE"):
                r = await c.request(method, "/x", headers=headers)
                assert r.status_code == status, (method, r.text)
                if status == 403:
                    assert "cross-site" in r.json()["detail"]
            assert (await c.get("/x", headers=headers)).status_code == 200  # reads are not refused

    asyncio.run(go())


def test_body_limit_from_content_length_and_while_streaming() -> None:
    app = SecurityMiddleware(_app(), max_body_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 300

    async def go() -> None:
        async with _client(app) as c:
            assert (await c.post("/x", content=b"x" * 1000)).json()["bytes"] == 1000
            r = await c.post("/x", content=b"x" * 1001)
            assert r.status_code == 413 and "limit" in r.json()["detail"]
            r = await c.post("/x", content=chunks())  # no Content-Length: counted as it arrives
            assert r.status_code == 413

    asyncio.run(go())


def test_websockets_need_login_and_same_origin() -> None:
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(scope_user(socket.scope, "-"))
        await socket.close()

    inner = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app = BasicAuthMiddleware(SecurityMiddleware(inner, max_body_bytes=100), {"alice": "pw"}, delay=0)
    with TestClient(app, base_url="http://testserver") as client:
        with client.websocket_connect("/ws", headers=_basic("alice", "pw")) as s:
            assert s.receive_text() == "alice"
        for headers in (
            {},
            _basic("alice", "nope"),
            {**_basic("alice", "pw"), "Origin": "https://evil.example"},
            {**_basic("alice", "pw"), "Origin": "null"},
        ):
            with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers=headers) as s:
                s.receive_text()


def test_a_flood_of_made_up_names_does_not_wipe_a_real_users_counter() -> None:
    from webui.api.throttle import MAX_TRACKED, LoginThrottle

    throttle = LoginThrottle(10, 10, protected=["alice"])
    throttle.failure("10.0.0.1", "alice", now=0)
    for n in range(MAX_TRACKED + 10):
        throttle.failure(f"10.1.{n // 250}.{n % 250}", f"made-up-{n}", now=1)
    assert throttle.retry_after("10.9.9.9", "alice", now=2) == 8  # still blocked until t=10
    assert throttle.retry_after("10.9.9.9", "made-up-0", now=2) == 0  # evicted: memory stays bounded
    assert len(throttle._failures) <= MAX_TRACKED
