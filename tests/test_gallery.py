"""The gallery index over outputs/: scan, pages, search, owners, thumbnails, trash; and /api/v1/images."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.test_server_harness import make_manager, running_server
from webui.core.outputs.gallery import THUMB_SIZE, Filters, GalleryIndex, fts_query
from webui.core.types import RequestError


def _png(
    path: Path, prompt: str, *, seed: int = 1, model: str = "tiny", size: int = 64, t: float = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    text = f"{prompt}\nNegative prompt: ugly\nSteps: 2, Seed: {seed}, Size: {size}x{size}, Model: {model}"
    info.add_text("parameters", text)
    Image.new("RGB", (size, size), (seed * 20 % 255, 90, 160)).save(path, pnginfo=info)
    if t:
        os.utime(path, (t, t))
    return path


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    day = out / "txt2img-images" / "2026-12-01"
    _png(day / "00001-1.png", "a red apple on a table", seed=1, t=1000)
    _png(day / "00002-2.png", "a green apple", seed=2, model="other", t=2000)
    _png(out / "img2img-images" / "2026-12-02" / "00003-3.png", "a castle at night", seed=3, t=3000)
    _png(out / "extras-images" / "00004.png", "applesauce recipe", seed=4, t=4000)
    _png(out / ".trash" / "old.png", "a red apple in the trash", seed=5, t=5000)  # dot-folders: not indexed
    (out / "notes.txt").write_text("not an image")
    return out


def test_scan_indexes_every_image_with_its_infotext(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    report = g.scan()
    assert (report.added, report.removed, report.files) == (4, 0, 4)
    page = g.page()
    assert [i.seed for i in page.images] == [4, 3, 2, 1]  # newest first
    first = page.images[-1]
    assert first.prompt == "a red apple on a table" and first.negative == "ugly" and first.model == "tiny"
    assert (first.width, first.height, first.folder) == (64, 64, "txt2img-images")
    assert "Seed: 1" in g.infotext(first.id)
    assert g.scan().added == 0  # unchanged files are not read again


def test_rescan_sees_changed_and_removed_files(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    g.scan()
    (outputs / "extras-images" / "00004.png").unlink()
    _png(outputs / "img2img-images" / "2026-12-02" / "00003-3.png", "a castle in the snow", seed=3, t=3500)
    report = g.scan()
    assert (report.added, report.updated, report.removed) == (0, 1, 1)
    assert [i.prompt for i in g.page(Filters(query="castle")).images] == ["a castle in the snow"]


def test_cursor_pages_cover_everything_once(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    g.scan()
    seen, cursor = [], None
    while True:
        page = g.page(cursor=cursor, limit=3)
        seen += [i.seed for i in page.images]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [4, 3, 2, 1]
    with pytest.raises(RequestError) as e:
        g.page(cursor="nonsense")
    assert e.value.field == "cursor"
    with pytest.raises(RequestError) as e:
        g.page(limit=100_000)
    assert e.value.field == "limit"


def test_search_filters_combine(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    g.scan()

    def seeds(**kw: object) -> list[int | None]:
        return [i.seed for i in g.page(Filters(**kw)).images]  # type: ignore[arg-type]

    assert seeds(query="apple") == [4, 2, 1]  # prefix: "applesauce" too
    assert seeds(query="red apple") == [1]  # every word
    assert seeds(query="ugly") == [4, 3, 2, 1]  # the negative prompt is searched too
    assert seeds(query='"); DROP TABLE images; --') == []  # taken literally
    assert seeds(model="other") == [2]
    assert seeds(folder="txt2img-images") == [2, 1]
    assert seeds(since=1500, until=3500) == [3, 2]
    for bad in ("../", "..", "txt2img-images/../..", ".trash"):
        with pytest.raises(RequestError) as e:
            g.page(Filters(folder=bad))
        assert e.value.field == "folder"
    assert fts_query('a "b" OR c*') == '"a"* AND "b"* AND "OR"* AND "c"*'


def test_owners_see_their_own_and_shared_images(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    owners = {
        str(outputs / "txt2img-images" / "2026-12-01" / "00001-1.png"): "ann",
        "img2img-images/2026-12-02/00003-3.png": "ben",
        str(outputs.parent / "elsewhere.png"): "cy",  # outside outputs: ignored
    }
    g.scan(owners)
    ann = [i.seed for i in g.page(Filters(owner="ann")).images]
    assert ann == [1]
    shared = g.page(Filters(owner="ben")).images[0]
    assert g.set_shared(shared.id, True)
    assert [i.seed for i in g.page(Filters(owner="ann")).images] == [3, 1]
    assert len(g.page(Filters(owner=None)).images) == 4


def test_sync_jobs_indexes_new_job_images_once_with_their_owner(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    new = _png(outputs / "txt2img-images" / "2026-12-03" / "00005-9.png", "a blue sphere", seed=9)
    calls: list[float] = []

    def finished(since: float) -> list[tuple[float, str, str]]:
        calls.append(since)
        return [(50.0, "ann", str(new))] if since < 50 else []

    assert g.sync_jobs(finished, "db-a") == 1
    assert g.sync_jobs(finished, "db-a") == 0 and calls == [0.0, 50.0]
    assert [i.seed for i in g.page(Filters(owner="ann")).images] == [9]


def test_thumbnails_are_small_and_made_once(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    _png(outputs / "big" / "large.png", "a big picture", size=700)
    g.scan()
    image = g.page(Filters(folder="big")).images[0]
    thumb = g.thumbnail(image)
    with Image.open(thumb) as im:
        assert im.format == "WEBP" and max(im.size) == THUMB_SIZE
    made = thumb.stat().st_mtime_ns
    assert g.thumbnail(image) == thumb and thumb.stat().st_mtime_ns == made
    assert thumb.is_relative_to(outputs / ".gallery")


def test_trash_moves_the_file_and_empty_trash_deletes_it(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    g.scan()
    image = g.page(Filters(query="castle")).images[0]
    target = g.trash(image)
    assert target == outputs / ".trash" / image.path and target.exists()
    assert not (outputs / image.path).exists() and g.get(image.id) is None
    assert g.scan().added == 0  # the trash is not indexed
    assert g.empty_trash() == 2 and not (outputs / ".trash").exists()


def test_a_file_deleted_elsewhere_drops_out_of_the_next_page(outputs: Path) -> None:
    g = GalleryIndex.in_folder(outputs)
    g.scan()
    (outputs / "extras-images" / "00004.png").unlink()
    assert [i.seed for i in g.page().images] == [3, 2, 1]
    assert g.count() == 3


# ---- over HTTP, with logins and real jobs ----------------------------------------------------------

USERS = {"ann": "pw-a", "ben": "pw-b", "root": "pw-r"}
FLAGS = ["--api", "--api-auth", ",".join(f"{u}:{p}" for u, p in USERS.items()), "--admin", "root"]


def test_http_gallery_lists_job_images_per_user(tiny_data_dir: Path, tmp_path: Path) -> None:
    manager = make_manager(tiny_data_dir, tmp_path)
    with running_server(tiny_data_dir, tmp_path, flags=FLAGS, manager=manager, auth_delay=0.01) as srv:

        def client(user: str) -> httpx.Client:
            return srv.client(auth=(user, USERS[user]))

        with client("ann") as ann, client("ben") as ben, client("root") as root:
            request = {"prompt": "a lonely lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 7}
            job = ann.post("/api/v1/jobs", json={"kind": "txt2img", "request": request}).json()["id"]
            deadline = time.monotonic() + 120
            while ann.get(f"/api/v1/jobs/{job}").json()["state"] != "done":
                assert time.monotonic() < deadline, "the job did not finish"
                time.sleep(0.1)
            _png(srv.config.outputs_dir / "by-hand" / "x.png", "a lighthouse drawn by hand", seed=8)
            assert ann.post("/api/v1/images/scan").json()["files"] == 2

            mine = ann.get("/api/v1/images", params={"q": "lighthouse"}).json()
            assert [i["seed"] for i in mine["images"]] == [7] and mine["next_cursor"] is None
            image_id = mine["images"][0]["id"]
            assert mine["images"][0]["owner"] == "ann"
            assert ben.get("/api/v1/images").json()["images"] == []
            assert ben.get(f"/api/v1/images/{image_id}").status_code == 404
            assert len(root.get("/api/v1/images").json()["images"]) == 2  # the admin sees every image

            one = ann.get(f"/api/v1/images/{image_id}").json()
            assert "Seed: 7" in one["infotext"]
            thumb = ann.get(f"/api/v1/images/{image_id}/thumbnail")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
            assert ann.get(f"/api/v1/images/{image_id}/file").content[:4] == b"\x89PNG"
            r = ann.get("/api/v1/images", params={"folder": "../"})
            assert r.status_code == 422 and "folder" in r.text

            assert ben.post(f"/api/v1/images/{image_id}/share", json={"shared": True}).status_code == 403
            assert root.post(f"/api/v1/images/{image_id}/share", json={"shared": True}).status_code == 200
            assert [i["id"] for i in ben.get("/api/v1/images").json()["images"]] == [image_id]
            assert ben.delete(f"/api/v1/images/{image_id}").status_code == 403  # shared, still ann's
            assert ann.delete(f"/api/v1/images/{image_id}").json()["trashed"] is True
            assert ann.get("/api/v1/images").json()["images"] == []
            assert ann.delete("/api/v1/images/trash").status_code == 403
            assert root.delete("/api/v1/images/trash").json()["deleted"] == 1
        with srv.client() as anonymous:
            assert anonymous.get("/api/v1/images").status_code == 401
