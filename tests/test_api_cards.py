"""`/api/v1/cards` on a real 127.0.0.1 server with logins (root is the admin, alice a user) and a
Civitai-style server on another loopback port: listing and filters, previews only from the model
folders, sidecar edits and fetch-info for admins only, refresh, and every route behind the login."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.download_server import Served, json_page, serving
from tests.test_server_harness import Running, running_server
from webui.core.networks.tiny import write_header_only

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
ROOT, ALICE = ("root", "pr"), ("alice", "pa")


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def civitai() -> Iterator[Served]:
    with serving() as served:
        yield served


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, civitai: Served) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("cards-api")
    lora = data / "models" / "Lora"
    write_header_only(lora / "ink.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    write_header_only(lora / "sub" / "paper.safetensors", {"ss_base_model_version": "sd_v1"})
    (lora / "sub" / "paper.preview.png").write_bytes(_png((0, 128, 0)))
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "VAE").mkdir(parents=True)
    (data / "models" / "VAE" / "soft.pt").write_bytes(b"v" * 32)
    outside = data / "private.png"
    outside.write_bytes(_png((255, 0, 0)))
    os.symlink(outside, data / "models" / "VAE" / "soft.png")  # a preview that points out of the folder
    flags = ["--api", "--api-auth", "alice:pa,root:pr", "--admin", "root", "--download-hosts", "127.0.0.1",
             "--civitai-url", civitai.base]  # fmt: skip
    with running_server(data, tmp_path_factory.mktemp("cards-api-srv"), flags=flags) as r:
        yield r


def test_every_route_needs_a_login(srv: Running) -> None:
    with srv.client() as c:
        assert c.get("/api/v1/cards").status_code == 401
        assert (
            c.get(
                "/api/v1/cards/preview", params={"kind": "lora", "file": "sub/paper.safetensors"}
            ).status_code
            == 401
        )
        assert c.post("/api/v1/cards/refresh").status_code == 401
        assert (
            c.post(
                "/api/v1/cards/user-metadata", json={"kind": "lora", "file": "ink.safetensors"}
            ).status_code
            == 401
        )
        assert (
            c.post("/api/v1/cards/fetch-info", json={"kind": "lora", "file": "ink.safetensors"}).status_code
            == 401
        )


def test_listing_and_filters(srv: Running) -> None:
    with srv.client(ALICE) as c:
        r = c.get("/api/v1/cards").json()
        assert [(x["kind"], x["file"]) for x in r["cards"]] == [
            ("lora", "ink.safetensors"), ("lora", "sub/paper.safetensors"), ("vae", "soft.pt"),
        ]  # fmt: skip
        assert r["total"] == 3 and r["counts"]["lora"] == 2 and r["counts"]["checkpoint"] == 0
        paper = r["cards"][1]
        assert paper["base"] == "sd1" and paper["has_preview"] and paper["name"] == "paper"
        assert c.get(paper["preview_url"]).content == _png((0, 128, 0))
        assert r["cards"][0]["preview_url"] is None
        assert str(srv.config.data_dir) not in json.dumps(r)  # no server paths
        assert [x["name"] for x in c.get("/api/v1/cards", params={"base": "sdxl"}).json()["cards"]] == ["ink"]
        assert [x["name"] for x in c.get("/api/v1/cards", params={"kind": "vae"}).json()["cards"]] == ["soft"]
        page = c.get("/api/v1/cards", params={"limit": 1, "offset": 1}).json()
        assert page["total"] == 3 and [x["name"] for x in page["cards"]] == ["paper"]
        bad = c.get("/api/v1/cards", params={"kind": "hypernet"})
        assert bad.status_code == 422 and bad.json()["field"] == "kind"
        assert c.get("/api/v1/cards", params={"limit": 0}).status_code == 422
        by_size = c.get("/api/v1/cards", params={"sort": "size"}).json()["cards"]
        assert by_size[0]["name"] == "ink" and [x["size"] for x in by_size] == sorted(
            (x["size"] for x in by_size), reverse=True
        )
        assert c.get("/api/v1/cards", params={"sort": "random"}).json()["field"] == "sort"


def test_preview_only_from_the_model_folders(srv: Running) -> None:
    with srv.client(ALICE) as c:
        r = c.get("/api/v1/cards/preview", params={"kind": "lora", "file": "sub/paper.safetensors"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff" and r.content == _png((0, 128, 0))
        for file in ("../VAE/soft.pt", "sub/../ink.safetensors", "/etc/passwd", "sub\\paper.safetensors"):
            refused = c.get("/api/v1/cards/preview", params={"kind": "lora", "file": file})
            assert refused.status_code == 422 and refused.json()["field"] == "file", file
        encoded = c.get("/api/v1/cards/preview?kind=lora&file=%2e%2e%2fVAE%2fsoft.pt")
        assert encoded.status_code == 422
        assert (
            c.get("/api/v1/cards/preview", params={"kind": "vae", "file": "soft.pt"}).status_code == 404
        )  # symlink out
        assert (
            c.get("/api/v1/cards/preview", params={"kind": "lora", "file": "ink.safetensors"}).status_code
            == 404
        )
        assert (
            c.get(
                "/api/v1/cards/preview", params={"kind": "lora", "file": "sub/paper.preview.png"}
            ).status_code
            == 404
        )


def test_user_metadata_is_admin_only_and_saved_on_disk(srv: Running) -> None:
    body = {"kind": "lora", "file": "ink.safetensors",
            "user_metadata": {"activation text": "inky", "preferred weight": 0.8}}  # fmt: skip
    sidecar = srv.config.lora_dirs[0] / "ink.json"
    with srv.client(ALICE) as c:
        r = c.post("/api/v1/cards/user-metadata", json=body)
        assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert not sidecar.exists()
    with srv.client(ROOT) as c:
        r = c.post("/api/v1/cards/user-metadata", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["user_metadata"]["activation text"] == "inky"
        assert json.loads(sidecar.read_text()) == {"activation text": "inky", "preferred weight": 0.8}
        found = c.get("/api/v1/cards", params={"q": "inky"}).json()["cards"]
        assert [x["name"] for x in found] == ["ink"]
        bad = c.post("/api/v1/cards/user-metadata", json={**body, "user_metadata": {"preferred weight": 99}})
        assert bad.status_code == 422 and bad.json()["field"] == "preferred weight"
        gone = c.post("/api/v1/cards/user-metadata", json={**body, "file": "nothing.safetensors"})
        assert gone.status_code == 404
        escape = c.post("/api/v1/cards/user-metadata", json={**body, "file": "../../config.safetensors"})
        assert escape.status_code == 422
        assert c.post("/api/v1/cards/user-metadata", json={**body, "extra": 1}).status_code == 422
    assert json.loads(sidecar.read_text())["preferred weight"] == 0.8


def test_fetch_info_is_admin_only_and_writes_preview_and_notes(srv: Running, civitai: Served) -> None:
    lora = srv.config.lora_dirs[0] / "sub" / "paper.safetensors"
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    civitai.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page({
        "id": 7, "modelId": 3, "name": "v1", "baseModel": "SD 1.5", "trainedWords": ["papery"],
        "description": "<p>Paper look</p>", "model": {"name": "Paper"},
        "images": [{"url": f"{civitai.base}/p.png", "type": "image"}],
    })  # fmt: skip
    civitai.files["/p.png"] = _png((1, 2, 3))
    body = {"kind": "lora", "file": "sub/paper.safetensors", "replace_preview": True}
    with srv.client(ALICE) as c:
        assert c.post("/api/v1/cards/fetch-info", json=body).status_code == 403
    assert civitai.seen == []
    with srv.client(ROOT) as c:
        r = c.post("/api/v1/cards/fetch-info", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["wrote_preview"] and got["sha256"] == sha and got["civitai"]["model_name"] == "Paper"
        assert got["card"]["shorthash"] == sha[:10]
        preview = c.get("/api/v1/cards/preview", params={"kind": "lora", "file": "sub/paper.safetensors"})
        assert preview.content == _png((1, 2, 3))
        missing = c.post("/api/v1/cards/fetch-info", json={"kind": "vae", "file": "soft.pt"})
        assert missing.status_code == 404 and "knows no file" in missing.json()["detail"]
    sidecar = json.loads((lora.parent / "paper.json").read_text())
    assert sidecar["activation text"] == "papery" and sidecar["sd version"] == "SD1"
    assert sidecar["notes"] == f"{civitai.base}/models/3?modelVersionId=7"


def test_files_added_are_listed_and_refresh_rereads_files_changed_in_place(srv: Running) -> None:
    added = write_header_only(srv.config.lora_dirs[0] / "late.safetensors", {})
    try:
        with srv.client(ALICE) as c:  # a new file changes its folder: listed without a refresh
            assert "late" in [x["name"] for x in c.get("/api/v1/cards").json()["cards"]]
            assert c.post("/api/v1/cards/refresh").status_code == 403  # the model lists are the admin's
        notes = added.with_suffix(".json")
        notes.write_text('{"sd version": "SD2"}')  # a new file: seen at once

        def base(c: Any) -> str:
            return [x for x in c.get("/api/v1/cards").json()["cards"] if x["name"] == "late"][0]["base"]

        with srv.client(ROOT) as c:
            assert base(c) == "sd2"
            with open(notes, "w") as f:  # rewritten in place: the folder does not change
                f.write('{"sd version": "Flux"}')
            assert base(c) == "sd2"
            r = c.post("/api/v1/cards/refresh")
            assert r.status_code == 200 and r.json()["counts"]["lora"] == 3
            assert base(c) == "flux"
    finally:
        added.unlink()
        added.with_suffix(".json").unlink(missing_ok=True)


@pytest.mark.parametrize("route", ["/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-loras"])
def test_a1111_refresh_routes_rescan_the_library_too(srv: Running, route: str) -> None:
    vae = srv.config.vae_dirs[0] / "soft.pt"

    def size(c: Any) -> int:
        return c.get("/api/v1/cards", params={"kind": "vae"}).json()["cards"][0]["size"]

    with srv.client(ROOT) as c:
        before = size(c)
        with open(vae, "ab") as f:  # grows in place: only a rescan sees it
            f.write(b"more")
        assert size(c) == before
        assert c.post(route).status_code == 200
        assert size(c) == before + 4


def test_info_gives_the_header_metadata_and_training_tags(srv: Running) -> None:
    tags = json.dumps({"1_x": {"<b>bold</b>": 3, "soft": 1}})
    write_header_only(srv.config.lora_dirs[0] / "sub" / "tagged.safetensors", {"ss_tag_frequency": tags})
    try:
        with srv.client(ALICE) as c:
            r = c.get("/api/v1/cards/info", params={"kind": "lora", "file": "sub/tagged.safetensors"})
            assert r.status_code == 200
            got = r.json()
            assert got["name"] == "tagged" and got["metadata"]["ss_tag_frequency"]["1_x"]["soft"] == 1
            assert got["training_tags"] == [{"tag": "<b>bold</b>", "count": 3}, {"tag": "soft", "count": 1}]
            assert c.get("/api/v1/cards/info", params={"kind": "lora", "file": "../x"}).status_code == 422
            assert (
                c.get("/api/v1/cards/info", params={"kind": "lora", "file": "no.safetensors"}).status_code
                == 404
            )
    finally:
        (srv.config.lora_dirs[0] / "sub" / "tagged.safetensors").unlink()
