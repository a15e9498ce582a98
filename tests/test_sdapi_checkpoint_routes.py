"""A1111's checkpoint routes on a real 127.0.0.1 server: reload-checkpoint loads the settings' model into
every worker's cache, unload-checkpoint empties it, refresh-checkpoints / refresh-vae list files added
since the start; only admins may call them when there are logins."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_server_harness import Running, running_server

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
ROOT, ALICE = ("root", "pr"), ("alice", "pa")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_files: dict[str, Path]) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("ckpt-routes")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    shutil.copy(tiny_files["sd1"], ckpts / "first.safetensors")
    flags = ["--api", "--api-auth", "alice:pa,root:pr", "--admin", "root"]
    with running_server(data, tmp_path_factory.mktemp("ckpt-routes-srv"), flags=flags) as r:
        yield r


def _cached(srv: Running) -> list[list[str]]:
    return [[p.name for p in e.manager.cached()] for e in srv.services.queue.engines]


def test_reload_then_unload(srv: Running) -> None:
    with srv.client(ROOT) as c:
        assert c.post("/sdapi/v1/unload-checkpoint").json() == {}
        assert _cached(srv) == [[]]
        r = c.post("/sdapi/v1/reload-checkpoint")
        assert r.status_code == 200 and r.json() == {}
        assert _cached(srv) == [["first.safetensors"]]
        assert c.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert _cached(srv) == [[]]


def test_reload_names_a_setting_that_points_nowhere(srv: Running) -> None:
    srv.services.settings.update({"sd_model_checkpoint": "gone.safetensors"})
    try:
        with srv.client(ROOT) as c:
            r = c.post("/sdapi/v1/reload-checkpoint")
    finally:
        srv.services.settings.update({"sd_model_checkpoint": None})
    assert r.status_code == 422 and "sd_model_checkpoint" in r.text


def test_refresh_lists_files_added_since_the_start(srv: Running, tiny_files: dict[str, Path]) -> None:
    added = srv.config.ckpt_dirs[0] / "added-later.safetensors"
    shutil.copy(tiny_files["sd1"], added)
    try:
        with srv.client(ROOT) as c:
            before = [m["model_name"] for m in c.get("/sdapi/v1/sd-models").json()]
            assert c.post("/sdapi/v1/refresh-checkpoints").status_code == 200
            after = [m["model_name"] for m in c.get("/sdapi/v1/sd-models").json()]
            assert c.post("/sdapi/v1/refresh-vae").status_code == 200
        assert "added-later" not in before and "added-later" in after
        worker_lists = [[f.name for f in e.manager.checkpoints()] for e in srv.services.queue.engines]
        assert all("added-later.safetensors" in names for names in worker_lists)
    finally:
        added.unlink()


@pytest.mark.parametrize(
    "route", ["unload-checkpoint", "reload-checkpoint", "refresh-checkpoints", "refresh-vae"]
)
def test_only_admins(srv: Running, route: str) -> None:
    with srv.client(ALICE) as c:
        r = c.post(f"/sdapi/v1/{route}")
    assert r.status_code == 403 and "admin" in r.text
