"""`/api/v1/images`: the gallery of every image under outputs/ (webui.core.outputs.gallery) over HTTP.

- `GET /api/v1/images?q=&model=&folder=&since=&until=&cursor=&limit=`: newest first, `next_cursor` for
  the next page (null at the end). `q`: words of the prompt or negative prompt, all of them, as
  prefixes; `since`/`until`: Unix times. Jobs finished since the last call are indexed first.
- `GET /api/v1/images/{id}` one image with its infotext; `/thumbnail` a WebP of at most 256 px;
  `/file` the file itself.
- `DELETE /api/v1/images/{id}` moves the file to outputs/.trash/ (its owner or an admin).
- `POST /api/v1/images/{id}/share {"shared": true}` shows an image to every user (admin).
- `POST /api/v1/images/scan` re-reads the outputs folder (files added or removed by hand).
- `DELETE /api/v1/images/trash` empties the trash (admin).

Who sees what: without logins, everything (the single local user is the admin); with logins an admin
sees every image, others their own images and shared ones. An image the caller may not see is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from webui.api.roles import ADMIN, USER, needs, role_of
from webui.api.sdapi import caller
from webui.api.services import Services
from webui.core.outputs.gallery import Filters, GalleryImage, GalleryIndex


class ShareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shared: bool


def viewer_filter(services: Services, user: str) -> str | None:
    """The owner whose images `user` sees (None: every image)."""
    options = services.options
    if not options.auth or role_of(user, options) == ADMIN:
        return None
    return user


def build_router(services: Services, gallery: GalleryIndex) -> APIRouter:
    router = APIRouter(prefix="/api/v1/images")

    def sync() -> None:
        queue = services.queue
        gallery.sync_jobs(queue.finished_images, str(getattr(queue, "db_path", "jobs")))

    def visible(request: Request, image_id: int) -> GalleryImage:
        image = gallery.get(image_id)
        owner = viewer_filter(services, caller(request, services)[0])
        if image is None or (owner is not None and image.owner != owner and not image.shared):
            raise HTTPException(404, f"no image {image_id}")
        return image

    @router.get("")
    def listing(
        request: Request,
        q: str = "",
        model: str = "",
        folder: str = "",
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        sync()
        owner = viewer_filter(services, caller(request, services)[0])
        page = gallery.page(Filters(q, model, folder, since, until, owner), cursor, limit)
        return {"images": [i.to_json() for i in page.images], "next_cursor": page.next_cursor}

    @router.post("/scan", dependencies=[needs(services, USER, "Rescanning the gallery")])
    async def scan() -> dict[str, int]:
        def work() -> dict[str, int]:
            sync()
            report = gallery.scan()
            return {
                "added": report.added,
                "updated": report.updated,
                "removed": report.removed,
                "files": report.files,
            }

        return await run_in_threadpool(work)

    @router.delete("/trash", dependencies=[needs(services, ADMIN, "Emptying the gallery's trash")])
    def empty_trash() -> dict[str, int]:
        return {"deleted": gallery.empty_trash()}

    @router.get("/{image_id}")
    def one(image_id: int, request: Request) -> dict[str, Any]:
        image = visible(request, image_id)
        return {**image.to_json(), "infotext": gallery.infotext(image_id)}

    @router.get("/{image_id}/thumbnail")
    def thumbnail(image_id: int, request: Request) -> FileResponse:
        image = visible(request, image_id)
        try:
            path = gallery.thumbnail(image)
        except OSError as e:
            raise HTTPException(404, f"image {image_id} cannot be read: {e}") from e
        return FileResponse(path, media_type="image/webp")

    @router.get("/{image_id}/file")
    def file(image_id: int, request: Request) -> FileResponse:
        path = gallery.file(visible(request, image_id))
        if not path.exists():
            raise HTTPException(404, f"image {image_id} is no longer on disk")
        return FileResponse(path)

    @router.delete("/{image_id}", dependencies=[needs(services, USER, "Deleting images")])
    def trash(image_id: int, request: Request) -> dict[str, Any]:
        image = visible(request, image_id)
        user = caller(request, services)[0]
        if viewer_filter(services, user) is not None and image.owner != user:
            raise HTTPException(403, f"image {image_id} is another user's: only an admin may delete it")
        gallery.trash(image)
        return {"id": image_id, "trashed": True}

    @router.post("/{image_id}/share", dependencies=[needs(services, ADMIN, "Sharing images")])
    def share(image_id: int, body: ShareBody, request: Request) -> dict[str, Any]:
        visible(request, image_id)
        gallery.set_shared(image_id, body.shared)
        return {"id": image_id, "shared": body.shared}

    return router
