"""Accounts on a real server (issue 22, "Accounts and roles"): a users file with hashed passwords and
roles (admin / user / viewer) beside the old U:P flags, roles enforced on every route that changes
shared state or generates, per-user API keys (Bearer) that are revocable and throttled when wrong, and
the admin's accounts API."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_server_harness import Running, make_manager, running_server
from webui.api import users_file as uf
from webui.api.auth import COOKIE_NAME, LOGIN_PATH
from webui.api.passwords import hash_password

PASSWORDS = {"root": "root-pass-1", "alice": "alice-pass-1", "bob": "bob-pass-12", "vera": "vera-pass-1"}
ROLES = {"root": "admin", "alice": "user", "bob": "user", "vera": "viewer"}
SMALL = {"prompt": "a key", "steps": 2, "width": 64, "height": 64, "seed": 3}

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def write_users(path: Path, extra: dict[str, tuple[str, str]] | None = None) -> None:
    people = {n: (ROLES[n], PASSWORDS[n]) for n in PASSWORDS} | (extra or {})
    data = uf.UsersData()
    for name, (role, password) in people.items():
        data = uf.add_user(data, name, role, hash_password(password))
    uf.write(path, data)


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from webui.server import build_ui

    tmp = tmp_path_factory.mktemp("accounts")
    users = tmp / "users.json"
    write_users(users, {"target": ("user", "target-pass-1")})
    flags = ["--api", "--users-file", str(users), "--api-auth", "carl:carl-pass"]
    manager = make_manager(tiny_data_dir, tmp)
    # failed logins block an address or a user name for 30 s: only dedicated addresses and names fail here
    with running_server(
        tiny_data_dir, tmp, flags=flags, manager=manager, ui_factory=build_ui, auth_delay=30.0
    ) as r:
        yield r


def login(srv: Running, name: str) -> httpx.Client:
    return srv.client(auth=(name, PASSWORDS[name]))


def bearer(srv: Running, key: str, address: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address) if address else None
    return httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=120, transport=transport
    )


def make_key(c: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    r = c.post("/api/v1/keys", json={"name": name, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- the users file ------------------------------------------------------------------------------------


def test_users_file_logins_with_roles_and_no_plain_text_at_rest(srv: Running) -> None:
    path = srv.services.options.users_file
    text = path.read_text()
    assert not any(p in text for p in PASSWORDS.values()) and "scrypt$" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for name in PASSWORDS:
        with login(srv, name) as c:
            assert c.get("/api/v1/me").json() == {"user": name, "role": ROLES[name]}
    with srv.client(auth=("carl", "carl-pass")) as c:  # a user of the old flags, beside the file
        assert c.get("/api/v1/me").json() == {"user": "carl", "role": "user"}
    # the login page takes file users too, and its cookie opens the API
    with httpx.Client(base_url=srv.url, transport=httpx.HTTPTransport(local_address="127.0.0.41")) as c:
        r = c.post(LOGIN_PATH, data={"username": "alice", "password": PASSWORDS["alice"], "next": "/"})
        assert r.status_code == 303 and r.cookies.get(COOKIE_NAME)
        assert c.get("/api/v1/me").json()["user"] == "alice"


def test_a_wrong_password_of_a_file_user_is_refused(srv: Running) -> None:
    with httpx.Client(base_url=srv.url, transport=httpx.HTTPTransport(local_address="127.0.0.42")) as c:
        r = c.get("/api/v1/me", auth=("target", "not-the-password"))
        assert r.status_code == 401
        r = c.get("/api/v1/me", auth=("target", "target-pass-1"))  # blocked before it is even checked
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_bad_users_files_are_refused_at_start_naming_the_file_and_entry(tmp_path: Path) -> None:
    from webui.api.auth import AuthSpecError
    from webui.flags import parse_flags
    from webui.server import build_options

    bad = tmp_path / "u.json"
    bad.write_text(
        json.dumps({"format": "sfumato-users", "users": {"eve": {"role": "user", "password": "plain"}}})
    )
    with pytest.raises(AuthSpecError, match=r"u\.json: users\.eve: password must be a scrypt hash"):
        build_options(parse_flags(["--users-file", str(bad)]))
    bad.write_text(
        json.dumps({"format": "sfumato-users", "users": {"eve": {"role": "boss", "password": "x"}}})
    )
    with pytest.raises(AuthSpecError, match="users.eve: role 'boss': one of admin, user, viewer"):
        build_options(parse_flags(["--users-file", str(bad)]))
    good = tmp_path / "good.json"
    write_users(good)
    with pytest.raises(AuthSpecError, match="alice also given by --api-auth"):
        build_options(parse_flags(["--users-file", str(good), "--api-auth", "alice:x"]))
    options = build_options(parse_flags(["--users-file", str(good), "--admin", "alice"]))
    assert options.accounts.role("alice") == "admin" and options.accounts.role("bob") == "user"
    with pytest.raises(AuthSpecError, match="--admin: eve is not a configured user"):
        build_options(parse_flags(["--users-file", str(good), "--admin", "eve"]))


# -- roles ------------------------------------------------------------------------------------------------


def test_a_wrong_role_gets_403_naming_the_roles(srv: Running) -> None:
    with login(srv, "alice") as alice, login(srv, "vera") as vera:
        r = alice.post("/sdapi/v1/options", json={"samples_format": "jpg"})
        assert r.status_code == 403 and "only an admin" in r.text and "has the role 'user'" in r.text
        for path, body in (
            ("/sdapi/v1/txt2img", SMALL),
            ("/api/v1/jobs", {"kind": "txt2img", "request": SMALL}),
            ("/sdapi/v1/extra-single-image", {}),
        ):
            r = vera.post(path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert (
                "has the role 'viewer'" in r.json()["detail"]
                and "needs the role 'user'" in r.json()["detail"]
            )
        assert vera.get("/sdapi/v1/samplers").status_code == 200  # a viewer reads
        assert vera.get("/sdapi/v1/sd-models").status_code == 200
        assert vera.get("/sdapi/v1/options").status_code == 200
    assert [j for j in srv.services.queue.list(limit=100) if j.owner == "vera"] == []


# what a viewer may still POST/DELETE: their own keys and sessions, reading a PNG's text, acting on their
# own jobs (they have none: 404 or nothing happens)
VIEWER_MAY = {
    ("POST", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{key_id}"),
    ("POST", "/api/v1/sessions/{session_id}/revoke"),
    ("POST", "/sdapi/v1/png-info"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("DELETE", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/jobs/{job_id}/skip"),
    ("POST", "/sdapi/v1/interrupt"),
    ("POST", "/sdapi/v1/skip"),
}


def test_every_route_that_changes_or_makes_something_refuses_a_viewer(srv: Running) -> None:
    with login(srv, "vera") as vera:
        schema = vera.get("/openapi.json").json()
        checked = []
        for path, methods in schema["paths"].items():
            for method in methods:
                if method.upper() not in ("POST", "PUT", "PATCH", "DELETE"):
                    continue
                if (method.upper(), path) in VIEWER_MAY:
                    continue
                url = path.replace("{", "x").replace("}", "")
                r = vera.request(method.upper(), url, json={})
                assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
                checked.append(path)
        assert "/sdapi/v1/txt2img" in checked and "/api/v1/users" in checked and "/api/v1/merges" in checked


def _ui_call(c: httpx.Client, elem_id: str, data: list[Any], session: str) -> list[Any]:
    config = c.get("/config").json()
    ids = {b.get("props", {}).get("elem_id"): b["id"] for b in config["components"]}
    index = next(i for i, d in enumerate(config["dependencies"]) if [ids[elem_id], "click"] in d["targets"])
    if data is None:  # every input at the value the page starts with
        values = {b["id"]: b.get("props", {}).get("value") for b in config["components"]}
        data = [values.get(i) for i in config["dependencies"][index]["inputs"]]
    body = {"fn_index": index, "data": data, "session_hash": session, "event_data": None}
    assert c.post("/gradio_api/queue/join", json=body).status_code == 200
    outputs: list[Any] = []
    with c.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") in ("process_generating", "process_completed"):
                    outputs.append(message.get("output", {}).get("data"))
                if message.get("msg") == "process_completed":
                    assert message.get("success"), message
                    return outputs
    raise AssertionError("the event did not complete")


def test_the_studio_refuses_a_viewer_generating_and_a_user_managing_accounts(srv: Running) -> None:
    with login(srv, "vera") as vera:
        said = json.dumps(_ui_call(vera, "txt2img_generate", None, "vera-gen"))  # type: ignore[arg-type]
        assert "has the role" in said and "viewer" in said
    assert [j for j in srv.services.queue.list(limit=100) if j.owner == "vera"] == []
    with login(srv, "alice") as alice:
        said = json.dumps(_ui_call(alice, "accounts_add", ["mallet", "admin", "mallet-pass-1"], "alice-acc"))
        assert "only an admin" in said
    assert not srv.services.options.accounts.exists("mallet")
    with login(srv, "root") as root:
        said = json.dumps(_ui_call(root, "accounts_add", ["uiuser", "viewer", "uiuser-pass-1"], "root-acc"))
        assert "Added uiuser (viewer)" in said
    assert srv.services.options.accounts.role("uiuser") == "viewer"
    assert "uiuser-pass-1" not in srv.services.options.users_file.read_text()


# -- API keys -----------------------------------------------------------------------------------------------


def test_a_bearer_key_works_is_shown_once_and_revoked_gets_401(srv: Running) -> None:
    with login(srv, "alice") as alice:
        made = make_key(alice, "render script")
        key = made["key"]
        assert key.startswith("sfk_") and made["user"] == "alice"
        listed = alice.get("/api/v1/keys").json()["keys"]
        assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
        assert key not in json.dumps(listed) and key not in srv.services.options.users_file.read_text()
        with bearer(srv, key, "127.0.0.45") as script:  # its own address: the 401 below blocks it
            assert script.get("/api/v1/me").json() == {"user": "alice", "role": "user"}
            r = script.post("/api/v1/jobs", json={"kind": "txt2img", "request": SMALL})
            assert r.status_code == 201, r.text
            job = r.json()["id"]
            assert srv.services.queue.get(job).owner == "alice"
            assert script.get(f"/api/v1/jobs/{job}/events", timeout=120).status_code == 200
            assert alice.get("/api/v1/keys").json()["keys"][0]["last_used"] is not None
            assert alice.delete(f"/api/v1/keys/{made['id']}").status_code == 200
            r = script.get("/api/v1/me")
            assert r.status_code == 401
        assert alice.get("/api/v1/keys").json()["keys"] == []


def test_a_key_of_one_user_cannot_see_or_revoke_anothers(srv: Running) -> None:
    with login(srv, "alice") as alice, login(srv, "bob") as bob, login(srv, "root") as root:
        a_key = make_key(alice, "a")
        b_key = make_key(bob, "b")
        with bearer(srv, b_key["key"]) as b_script:
            job = b_script.post("/api/v1/jobs", json={"kind": "txt2img", "request": SMALL}).json()["id"]
        with bearer(srv, a_key["key"]) as a_script:
            assert a_script.get(f"/api/v1/jobs/{job}").status_code == 404
            assert a_script.post(f"/api/v1/jobs/{job}/cancel").status_code == 404
            assert job not in {j["id"] for j in a_script.get("/api/v1/jobs").json()["jobs"]}
            assert a_script.get(f"/api/v1/jobs/{job}/images/0").status_code == 404
            assert a_script.delete(f"/api/v1/keys/{b_key['id']}").status_code == 404
            r = a_script.post("/api/v1/keys", json={"name": "for bob", "user": "bob"})
            assert r.status_code == 403 and "only an admin" in r.text
        assert {k["id"] for k in bob.get("/api/v1/keys").json()["keys"]} == {b_key["id"]}
        # an admin lists and revokes anybody's, and may make one for another user
        assert {a_key["id"], b_key["id"]} <= {k["id"] for k in root.get("/api/v1/keys").json()["keys"]}
        assert root.delete(f"/api/v1/keys/{b_key['id']}").status_code == 200
        made = make_key(root, "for vera", user="vera")
        with bearer(srv, made["key"]) as v:
            assert v.get("/api/v1/me").json()["user"] == "vera"
        assert root.delete(f"/api/v1/keys/{made['id']}").status_code == 200
        assert alice.delete(f"/api/v1/keys/{a_key['id']}").status_code == 200


def test_wrong_keys_are_throttled_like_wrong_passwords(srv: Running) -> None:
    with login(srv, "alice") as alice:
        good = make_key(alice, "throttle")
    address = "127.0.0.43"
    with bearer(srv, good["key"][:-4] + "AAAA", address) as wrong:
        assert wrong.get("/api/v1/me").status_code == 401
        r = wrong.get("/api/v1/me")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    with bearer(srv, good["key"], address) as right:  # the address is blocked: not even a right key
        assert right.get("/api/v1/me").status_code == 429
    with bearer(srv, good["key"]) as right:  # elsewhere the key works
        assert right.get("/api/v1/me").status_code == 200
    with bearer(srv, "sfk_000000000000_made-up", "127.0.0.44") as made_up:
        assert made_up.get("/api/v1/me").status_code == 401
        assert made_up.get("/api/v1/me").status_code == 429


# -- managing accounts ------------------------------------------------------------------------------------


def test_admins_manage_accounts_over_the_api_others_get_403(srv: Running) -> None:
    accounts = srv.services.options.accounts
    with login(srv, "root") as root, login(srv, "alice") as alice:
        r = alice.post("/api/v1/users", json={"name": "x1", "role": "admin", "password": "x1-pass-123"})
        assert r.status_code == 403 and "only an admin" in r.text
        assert alice.get("/api/v1/users").status_code == 403
        r = root.post("/api/v1/users", json={"name": "dora", "role": "boss", "password": "dora-pass-1"})
        assert r.status_code == 422 and r.json()["field"] == "role"
        r = root.post("/api/v1/users", json={"name": "dora", "password": "short"})
        assert r.status_code == 422 and r.json()["field"] == "password"
        r = root.post("/api/v1/users", json={"name": "../dora", "password": "dora-pass-1"})
        assert r.status_code == 422 and r.json()["field"] == "name"
        r = root.post("/api/v1/users", json={"name": "dora", "role": "user", "password": "dora-pass-1"})
        assert r.status_code == 201, r.text
        users = {u["name"]: u for u in root.get("/api/v1/users").json()["users"]}
        assert users["dora"]["role"] == "user" and users["carl"]["source"] == "flags"
        with srv.client(auth=("dora", "dora-pass-1")) as dora:
            key = make_key(dora, "dora's")["key"]
            assert root.patch("/api/v1/users/dora", json={"role": "viewer"}).status_code == 200
            r = dora.post("/api/v1/jobs", json={"kind": "txt2img", "request": SMALL})
            assert r.status_code == 403 and "'viewer'" in r.text  # the new role holds at once
        assert root.patch("/api/v1/users/root", json={"role": "user"}).status_code == 409
        assert root.delete("/api/v1/users/root").status_code == 409
        assert root.patch("/api/v1/users/carl", json={"role": "viewer"}).status_code == 409  # a flag user
        assert root.delete("/api/v1/users/dora").status_code == 200
        assert not accounts.exists("dora")
        with bearer(srv, key, "127.0.0.46") as gone:
            assert gone.get("/api/v1/me").status_code == 401  # their keys went with them
    assert "dora" not in srv.services.options.users_file.read_text()


def test_the_cli_changes_a_running_server_and_takes_no_password_arguments(
    srv: Running, tmp_path: Path
) -> None:
    path = srv.services.options.users_file
    env = {**os.environ, "NEW_PW": "cli-user-pass-1"}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "webui.users", "--file", str(path), *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=60)

    r = cli("--password-env", "NEW_PW", "add", "cliuser", "--role", "user")
    assert r.returncode == 0, r.stderr
    with srv.client(auth=("cliuser", "cli-user-pass-1")) as c:  # no restart needed
        assert c.get("/api/v1/me").json() == {"user": "cliuser", "role": "user"}
    assert cli("add", "other", "some-password").returncode == 2  # no password on the command line
    r = cli("--password-stdin", "add", "short1", stdin="abc\n")
    assert r.returncode == 2 and "at least 8 characters" in r.stderr
    r = cli("set-role", "cliuser", "viewer")
    assert r.returncode == 0, r.stderr
    assert srv.services.options.accounts.role("cliuser") == "viewer"
    r = cli("key-add", "cliuser", "cron")
    key = r.stdout.strip()
    assert r.returncode == 0 and key.startswith("sfk_") and "shown once" in r.stderr
    with bearer(srv, key) as script:
        assert script.get("/api/v1/me").json()["user"] == "cliuser"
    listed = cli("keys", "cliuser").stdout
    assert "cron" in listed and key not in listed
    assert "cliuser\tviewer" in cli("list").stdout
    browser = httpx.Client(base_url=srv.url, transport=httpx.HTTPTransport(local_address="127.0.0.48"))
    r = browser.post(LOGIN_PATH, data={"username": "cliuser", "password": "cli-user-pass-1", "next": "/"})
    assert r.status_code == 303 and browser.get("/api/v1/me").status_code == 200
    assert cli("--password-stdin", "passwd", "cliuser", stdin="cli-user-pass-2\n").returncode == 0
    assert browser.get("/api/v1/me").status_code == 401  # a new password ends the sessions
    browser.close()
    with srv.client(auth=("cliuser", "cli-user-pass-2")) as c:
        assert c.get("/api/v1/me").status_code == 200
    assert cli("remove", "cliuser").returncode == 0
    with bearer(srv, key, "127.0.0.47") as script:
        assert script.get("/api/v1/me").status_code == 401
    assert "cli-user-pass" not in path.read_text()


def test_a_users_file_broken_while_running_keeps_the_last_good_accounts(tmp_path: Path) -> None:
    from webui.api.accounts import Accounts

    path = tmp_path / "users.json"
    write_users(path)
    accounts = Accounts(users_file=path)
    assert accounts.check_password("alice", PASSWORDS["alice"]) == "alice"
    path.write_text("{ not json")
    assert accounts.role("alice") == "user"  # logged, the copy read before kept
    assert accounts.check_password("alice", PASSWORDS["alice"]) == "alice"
    assert accounts.check_password("nobody", "whatever-pass") is None
    assert accounts.check_password("alice", "wrong-password") is None


# -- the old flags ----------------------------------------------------------------------------------------


def test_the_old_flags_still_work_with_keys_kept_in_the_cache(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--api", "--api-auth", "ann:ann-pass", "--gradio-auth", "ben:ben-pass", "--admin", "ann",
             "--data-dir", str(tmp_path)]  # fmt: skip
    with (
        running_server(tiny_data_dir, tmp_path, flags=flags) as s,
        s.client(auth=("ann", "ann-pass")) as ann,
        s.client(auth=("ben", "ben-pass")) as ben,
    ):
        assert ann.get("/api/v1/me").json() == {"user": "ann", "role": "admin"}
        assert ben.get("/api/v1/me").json() == {"user": "ben", "role": "user"}
        r = ben.post("/sdapi/v1/options", json={"samples_format": "jpg"})
        assert r.status_code == 403 and "has the role 'user'" in r.text
        assert ben.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200
        made = make_key(ben, "ben's script")
        with bearer(s, made["key"]) as script:
            assert script.get("/api/v1/me").json()["user"] == "ben"
        stored = (tmp_path / "cache" / "api-keys.json").read_text()
        assert made["id"] in stored and made["key"] not in stored
        r = ann.post("/api/v1/users", json={"name": "x", "password": "x-pass-1234"})
        assert r.status_code == 409 and "--users-file" in r.text


# -- the pieces ----------------------------------------------------------------------------------------


def test_password_hashes_are_salted_scrypt_and_absurd_parameters_are_refused() -> None:
    from webui.api.passwords import is_hash, verify_password

    one, two = hash_password("same-password"), hash_password("same-password")
    assert one != two and one.startswith("scrypt$16384$8$1$") and "same-password" not in one
    assert verify_password("same-password", one) and not verify_password("same-passwore", one)
    salt, key = one.split("$")[4:]
    for bad in (
        f"scrypt$1073741824$8$1${salt}${key}",
        f"scrypt$1000$8$1${salt}${key}",
        "plain",
        "",
        "scrypt$$$$$",
    ):
        assert not is_hash(bad) and not verify_password("same-password", bad), bad


def test_concurrent_edits_of_the_users_file_lose_nothing(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "users.json"
    hashed = hash_password("shared-pass-1")

    def add(n: int) -> None:
        uf.update(path, lambda d: uf.add_user(d, f"u{n}", "user", hashed))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(uf.read(path).users) == sorted(f"u{n}" for n in range(8))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(uf.UsersFileError, match="user 'u1' already exists"):
        uf.update(path, lambda d: uf.add_user(d, "u1", "user", hashed))
    for reserved in ("anonymous", "browser-abc", "a:b", ""):
        with pytest.raises(uf.UsersFileError, match="user name"):
            uf.check_name(reserved)


def _page_load(c: httpx.Client, session: str) -> tuple[dict[str, Any], list[Any]]:
    """The studio's page-load event as this client's user: (config, its outputs)."""
    config = c.get("/config").json()
    index = next(i for i, d in enumerate(config["dependencies"]) if any(t[1] == "load" for t in d["targets"]))
    body = {"fn_index": index, "data": [], "session_hash": session, "event_data": None}
    r = c.post("/gradio_api/run/predict", json=body)
    assert r.status_code == 200, r.text
    return config, list(zip(config["dependencies"][index]["outputs"], r.json()["data"], strict=True))


def test_the_accounts_tab_is_shown_to_admins_only(srv: Running) -> None:
    for name, shown in (("root", True), ("alice", False), ("vera", False)):
        with login(srv, name) as c:
            config, outputs = _page_load(c, f"{name}-load")
            tab = next(
                b["id"] for b in config["components"] if b.get("props", {}).get("elem_id") == "tab_accounts"
            )
            table = next(
                b["id"] for b in config["components"] if b.get("props", {}).get("elem_id") == "accounts_users"
            )
            values = dict(outputs)
            assert values[tab].get("visible") is shown, (name, values[tab])
            rows = json.dumps(values[table])
            assert ("alice" in rows) is shown and ("scrypt" not in rows)
