"""Login throttling on a real server: blocked guesses are not evaluated, per address and per user name,
no reset by one's own account, X-Forwarded-For trusted only from --forwarded-allow-ips."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import Running, running_server
from webui.api.auth import LOGIN_PATH

USERS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "dave": "pw-d", "mallory": "pw-m"}
SPEC = ",".join(f"{u}:{p}" for u, p in USERS.items())


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("throttle")
    flags = ["--api-auth", SPEC]
    with running_server(tiny_data_dir, tmp, flags=flags, auth_delay=1.0, auth_delay_max=8) as r:
        yield r


def _from(srv: Running, address: str, timeout: float = 30) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x address is loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=srv.url, transport=transport, timeout=timeout)


def _give_up(c: httpx.Client, method: str, path: str, **kw: object) -> None:
    """Send a guess and stop waiting for the answer after 0.3 s (what a fast guesser does)."""
    with contextlib.suppress(httpx.TimeoutException):
        c.request(method, path, timeout=0.3, **kw)  # type: ignore[arg-type]


def test_after_a_wrong_guess_even_the_right_password_waits(srv: Running) -> None:
    with _from(srv, "127.0.0.2") as c:
        _give_up(c, "GET", "/api/v1/health", auth=("alice", "guess-1"))
        r = c.get("/api/v1/health", auth=("alice", USERS["alice"]))
        assert r.status_code == 429, r.status_code  # not evaluated: a right guess is not told apart
        assert int(r.headers["retry-after"]) >= 1 and 0 < r.json()["retry_after"] <= 1.0
        first = r.json()["retry_after"]
        again = c.get("/api/v1/health", auth=("alice", "guess-2"))
        assert again.status_code == 429 and again.json()["retry_after"] <= first  # a blocked try adds nothing
        time.sleep(first + 0.05)
        assert c.get("/api/v1/health", auth=("alice", USERS["alice"])).status_code == 200


def test_the_login_form_is_throttled_the_same_way(srv: Running) -> None:
    with _from(srv, "127.0.0.3") as c:
        _give_up(c, "POST", LOGIN_PATH, data={"username": "bob", "password": "guess"})
        r = c.post(LOGIN_PATH, data={"username": "bob", "password": USERS["bob"]})
        assert r.status_code == 429 and "sfumato_session" not in r.headers.get("set-cookie", "")
        assert "try again" in r.text and int(r.headers["retry-after"]) >= 1
        time.sleep(int(r.headers["retry-after"]) + 0.05)
        r = c.post(LOGIN_PATH, data={"username": "bob", "password": USERS["bob"]})
        assert r.status_code == 303 and "sfumato_session=" in r.headers["set-cookie"]


def test_logging_in_with_ones_own_account_does_not_reset_anothers_counter(srv: Running) -> None:
    with _from(srv, "127.0.0.4") as c:
        assert c.get("/api/v1/health", auth=("carol", "guess-1")).status_code == 401
        time.sleep(1.05)
        assert c.get("/api/v1/health", auth=("mallory", USERS["mallory"])).status_code == 200
        assert c.get("/api/v1/health", auth=("carol", "guess-2")).status_code == 401
        r = c.get("/api/v1/health", auth=("carol", "guess-3"))
        assert r.status_code == 429 and r.json()["retry_after"] > 1.2  # carol's second failure: 2 s


def test_guesses_at_one_user_from_many_addresses_are_throttled(srv: Running) -> None:
    with _from(srv, "127.0.0.5") as one, _from(srv, "127.0.0.6") as two, _from(srv, "127.0.0.7") as three:
        assert one.get("/api/v1/health", auth=("dave", "guess-1")).status_code == 401
        assert two.get("/api/v1/health", auth=("dave", USERS["dave"])).status_code == 429
        assert three.get("/api/v1/health", auth=("mallory", USERS["mallory"])).status_code == 200


def test_x_forwarded_for_is_not_trusted_by_default(srv: Running) -> None:
    with _from(srv, "127.0.0.8") as c:
        xff = {"X-Forwarded-For": "10.9.9.1"}
        assert c.get("/api/v1/health", auth=("nobody-1", "x"), headers=xff).status_code == 401
        xff = {"X-Forwarded-For": "10.9.9.2"}
        r = c.get("/api/v1/health", auth=("nobody-2", "x"), headers=xff)
        assert r.status_code == 429  # the same socket address, whatever the header says


def test_forwarded_allow_ips_trusts_the_named_proxy(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--api-auth", SPEC, "--forwarded-allow-ips", "127.0.0.1"]
    with running_server(tiny_data_dir, tmp_path, flags=flags, auth_delay=5) as srv, srv.client() as c:
        assert srv.services.options.forwarded_allow_ips == "127.0.0.1"
        for n, client in enumerate(("10.9.9.1", "10.9.9.2", "10.9.9.3")):
            r = c.get("/api/v1/health", auth=(f"nobody-{n}", "x"), headers={"X-Forwarded-For": client})
            assert r.status_code == 401, client  # each a different client behind the proxy
        r = c.get("/api/v1/health", auth=("nobody-9", "x"), headers={"X-Forwarded-For": "10.9.9.2"})
        assert r.status_code == 429
