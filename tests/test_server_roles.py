"""Roles on a real server: with logins, only --admin users change what every user shares (settings,
extensions, styles.csv, the model lists), through the API and the studio alike; everyone may read.
Without a login the one local user is the admin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_server_harness import Running, make_manager, running_server

USERS = "alice:pa,root:pr"
ADMIN_ONLY = ("/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-vae", "/sdapi/v1/refresh-embeddings",
              "/sdapi/v1/refresh-loras")  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from webui.server import build_ui

    tmp = tmp_path_factory.mktemp("roles")
    flags = ["--api", "--api-auth", USERS, "--admin", "root"]
    manager = make_manager(tiny_data_dir, tmp)
    with running_server(tiny_data_dir, tmp, flags=flags, manager=manager, ui_factory=build_ui) as r:
        yield r


def test_only_admins_change_server_settings_everyone_reads_them(srv: Running) -> None:
    with srv.client(auth=("alice", "pa")) as alice, srv.client(auth=("root", "pr")) as root:
        r = alice.post("/sdapi/v1/options", json={"samples_format": "jpg"})
        assert r.status_code == 403 and "only an admin" in r.json()["detail"] and "--admin" in r.text
        assert alice.get("/sdapi/v1/options").json()["samples_format"] == "png"
        for path in ADMIN_ONLY:
            r = alice.post(path)
            assert r.status_code == 403 and "only an admin" in r.json()["detail"], path
        assert root.post("/sdapi/v1/options", json={"samples_format": "jpg"}).status_code == 200
        assert alice.get("/sdapi/v1/options").json()["samples_format"] == "jpg"
        for path in ADMIN_ONLY:
            assert root.post(path).status_code == 200, path
        assert root.post("/sdapi/v1/options", json={"samples_format": "png"}).status_code == 200


def _ui_call(c: httpx.Client, index: int, data: list[Any], session: str) -> list[Any]:
    body = {"fn_index": index, "data": data, "session_hash": session, "event_data": None}
    assert c.post("/gradio_api/queue/join", json=body).status_code == 200
    with c.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    assert message.get("success"), message
                    return list(message["output"]["data"])
    raise AssertionError("the event did not complete")


def _events(c: httpx.Client) -> tuple[dict[str, int], list[dict[str, Any]]]:
    config = c.get("/config").json()
    ids = {b.get("props", {}).get("elem_id"): b["id"] for b in config["components"]}
    return ids, config["dependencies"]


def _defaults(c: httpx.Client) -> dict[int, Any]:
    """Each component's value as the page is built (a slider never sends None)."""
    return {b["id"]: b.get("props", {}).get("value") for b in c.get("/config").json()["components"]}


def _index(ids: dict[str, int], deps: list[dict[str, Any]], elem_id: str) -> int:
    return next(i for i, d in enumerate(deps) if [ids[elem_id], "click"] in d["targets"])


def test_the_studio_refuses_shared_changes_to_plain_users(srv: Running) -> None:
    extensions = sorted(p.name for p in (srv.config.data_dir / "extensions").glob("*"))
    with srv.client(auth=("alice", "pa")) as alice, srv.client(auth=("root", "pr")) as root:
        ids, deps = _events(alice)
        install = _index(ids, deps, "extensions_install")
        said = _ui_call(alice, install, ["file:///nonexistent/ext.git", ""], "alice-1")[0]
        assert "only an admin" in said and "Installing an extension" in said
        said = _ui_call(root, install, ["file:///nonexistent/ext.git", ""], "root-1")[0]
        assert "only an admin" not in said  # refused or failed for other reasons, not the role
        for elem in ("extensions_enable", "extensions_disable", "extensions_update"):
            said = _ui_call(alice, _index(ids, deps, elem), [None], f"alice-{elem}")[0]
            assert "only an admin" in said, elem
        apply = _index(ids, deps, "settings_apply")
        values = [_defaults(alice).get(i) for i in deps[apply]["inputs"]]  # as the page shows them
        said = _ui_call(alice, apply, values, "alice-apply")[0]
        assert said.startswith("Not saved") and "only an admin" in said
        said = _ui_call(root, apply, values, "root-apply")[0]
        assert "only an admin" not in said
        save = _index(ids, deps, "txt2img_style_save")
        before = (
            srv.services.engine.styles.path.read_bytes() if srv.services.engine.styles.path.exists() else b""
        )
        said = _ui_call(alice, save, ["alice style", "a {prompt}", "", []], "alice-style")[-1]
        assert "only an admin" in said
        after = (
            srv.services.engine.styles.path.read_bytes() if srv.services.engine.styles.path.exists() else b""
        )
        assert after == before
    assert sorted(p.name for p in (srv.config.data_dir / "extensions").glob("*")) == extensions


def test_without_a_login_the_local_user_is_the_admin(tiny_data_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_data_dir, tmp_path, flags=["--api"]) as srv, srv.client() as c:
        assert c.post("/sdapi/v1/options", json={"samples_format": "jpg"}).status_code == 200
        assert c.post("/sdapi/v1/refresh-checkpoints").status_code == 200
