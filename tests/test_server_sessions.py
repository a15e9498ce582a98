"""Login sessions on a real server: kept server-side (logout ends them, listed and revoked per user,
a new one on each login), and no cross-site login or logout (login CSRF)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import Running, running_server
from webui.api.auth import COOKIE_NAME, LOGIN_PATH, LOGOUT_PATH
from webui.api.sessions import SESSIONS_FILE

USERS = "sess-a:pa,sess-b:pb"  # names of their own: the data folder (sessions too) is shared by the run


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("sessions")
    with running_server(tiny_data_dir, tmp, flags=["--api", "--api-auth", USERS], auth_delay=0.0) as r:
        yield r


def _login(srv: Running, user: str, password: str, **headers: str) -> httpx.Response:
    """A login from a fresh client (no cookie jar carried over: each login here is its own browser)."""
    with srv.client() as c:
        return c.post(LOGIN_PATH, data={"username": user, "password": password}, headers=headers)


def _token(r: httpx.Response) -> str:
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    return cookie.split(";")[0].split("=", 1)[1]


def _as(srv: Running, token: str) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Cookie": f"{COOKIE_NAME}={token}"}, timeout=30)


def test_logout_ends_the_session_on_the_server(srv: Running) -> None:
    token = _token(_login(srv, "sess-a", "pa"))
    with _as(srv, token) as alice:
        assert alice.get("/api/v1/jobs").status_code == 200
        assert alice.get(LOGOUT_PATH).status_code == 303
    with _as(srv, token) as stale:  # the cookie kept after logout (a copy, a shared machine)
        assert stale.get("/api/v1/jobs").status_code == 401
        assert stale.get("/sdapi/v1/options").status_code == 401
    assert (srv.config.cache_dir / SESSIONS_FILE).is_file()
    assert token not in (srv.config.cache_dir / SESSIONS_FILE).read_bytes().decode("latin-1")


def test_sessions_are_listed_per_user_revocable_and_rotated_on_login(srv: Running) -> None:
    first = _token(_login(srv, "sess-a", "pa"))
    second = _token(_login(srv, "sess-a", "pa"))
    bobs = _token(_login(srv, "sess-b", "pb"))
    with _as(srv, first) as alice, _as(srv, bobs) as bob:
        listed = alice.get("/api/v1/sessions").json()["sessions"]
        assert len(listed) >= 2 and sum(s["current"] for s in listed) == 1
        assert first not in str(listed)
        other = next(s["id"] for s in listed if not s["current"])
        assert bob.post(f"/api/v1/sessions/{other}/revoke").status_code == 404  # not bob's
        assert len(bob.get("/api/v1/sessions").json()["sessions"]) == 1
        assert alice.post(f"/api/v1/sessions/{other}/revoke").status_code == 200
    with _as(srv, second) as revoked:
        assert revoked.get("/api/v1/jobs").status_code == 401
    # logging in with a cookie already set (planted or old) replaces it: the old one stops working
    fresh = _token(_login(srv, "sess-a", "pa", Cookie=f"{COOKIE_NAME}={first}"))
    assert fresh != first
    with _as(srv, first) as old:
        assert old.get("/api/v1/jobs").status_code == 401
    with _as(srv, fresh) as new:
        assert new.get("/api/v1/jobs").status_code == 200


def test_a_cross_site_login_gets_no_session(srv: Running) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):  # fmt: skip
        r = _login(srv, "sess-a", "pa", **headers)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], headers
        assert "set-cookie" not in r.headers
    same = _login(srv, "sess-a", "pa", Origin=srv.url, **{"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 303 and same.headers["set-cookie"].startswith(COOKIE_NAME)


def test_a_cross_site_logout_does_not_log_out(srv: Running) -> None:
    token = _token(_login(srv, "sess-a", "pa"))
    with _as(srv, token) as alice:
        for method in ("GET", "POST"):
            for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
                r = alice.request(method, LOGOUT_PATH, headers=headers)
                assert r.status_code == 403 and "set-cookie" not in r.headers, (method, headers)
        assert alice.get("/api/v1/jobs").status_code == 200  # still logged in
        own = alice.post(LOGOUT_PATH, headers={"Origin": srv.url, "Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 303
        assert alice.get("/api/v1/jobs").status_code == 401
