"""The studio's Gradio routes on a real server with logins: result files (`/gradio_api/file=<path>`) only
for the owner of the job that made them (and admins), and a Gradio session hash only for the user who
first used it (issue 22 items 5 and 19)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.test_server_harness import Running, make_manager, running_server

USERS = {"alice": "pa", "bob": "pb", "root": "pr"}
FAST: dict[str, Any] = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 5}

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from webui.server import build_ui

    tmp = tmp_path_factory.mktemp("files")
    spec = ",".join(f"{u}:{p}" for u, p in USERS.items())
    flags = ["--api", "--api-auth", spec, "--admin", "root"]
    manager = make_manager(tiny_data_dir, tmp)
    with running_server(tiny_data_dir, tmp, flags=flags, manager=manager, ui_factory=build_ui) as r:
        yield r


def _as(srv: Running, user: str) -> httpx.Client:
    return srv.client(auth=(user, USERS[user]))


def test_result_files_are_served_to_their_owner_and_admins_only(srv: Running) -> None:
    with _as(srv, "alice") as alice, _as(srv, "bob") as bob, _as(srv, "root") as root:
        r = alice.post("/api/v1/jobs", json={"kind": "txt2img", "request": FAST})
        assert r.status_code == 201, r.text
        info = srv.services.queue.wait(r.json()["id"], timeout=300)
        assert info.state.value == "done", info.error
        path = Path(info.images[0].path)
        assert path.is_file() and path.is_relative_to(srv.config.outputs_dir)
        url = f"/gradio_api/file={path}"
        mine = alice.get(url)
        assert mine.status_code == 200 and mine.content == path.read_bytes()
        assert root.get(url).status_code == 200  # an admin sees all
        for theft in (url, f"/gradio_api/file/{path}", f"/gradio_api/file={path.parent}/./{path.name}"):
            r = bob.get(theft)
            assert r.status_code == 404, theft
            assert r.content != path.read_bytes()
        # a file in the outputs that no job recorded is nobody's: not served to plain users
        stray = path.parent / "stray.png"
        Image.new("RGB", (8, 8)).save(stray)
        assert bob.get(f"/gradio_api/file={stray}").status_code == 404
        assert alice.get(f"/gradio_api/file={stray}").status_code == 404
        assert root.get(f"/gradio_api/file={stray}").status_code == 200


def _deps(c: httpx.Client) -> tuple[dict[str, int], list[dict[str, Any]]]:
    config = c.get("/config").json()
    ids = {b.get("props", {}).get("elem_id"): b["id"] for b in config["components"]}
    return ids, config["dependencies"]


def test_a_gradio_session_hash_is_bound_to_its_user(srv: Running) -> None:
    with _as(srv, "alice") as alice, _as(srv, "bob") as bob:
        ids, deps = _deps(alice)
        enable = next(i for i, d in enumerate(deps) if [ids["extensions_enable"], "click"] in d["targets"])
        session = "alice-private-1"
        body = {"fn_index": enable, "data": [None], "session_hash": session, "event_data": None}
        assert alice.post("/gradio_api/queue/join", json=body).status_code == 200
        # bob knows the hash: he can neither read the stream nor join or beat under it
        stolen = bob.get("/gradio_api/queue/data", params={"session_hash": session})
        assert stolen.status_code == 404 and "process_completed" not in stolen.text
        assert bob.post("/gradio_api/queue/join", json=body).status_code == 404
        assert bob.get(f"/gradio_api/heartbeat/{session}").status_code == 404
        done = None
        with alice.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        done = message
                        break
        assert done is not None and done.get("success"), done
        # bob's own sessions work as before
        mine = {**body, "session_hash": "bob-own-1"}
        assert bob.post("/gradio_api/queue/join", json=mine).status_code == 200
