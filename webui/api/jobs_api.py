"""The native jobs API, `/api/v1`: submit, list, read, stream events of, cancel and skip jobs.

Each user sees only their own jobs (admins see all); somebody else's job id answers 404, the same as
an id that does not exist, so ids do not leak. Result files are served by index from the job record,
never from a path in the request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from webui.api import images
from webui.api.downloads_api import native_download
from webui.api.extras_api import native_extras
from webui.api.jobview import can_see, job_json, result_roots, safe_result_path
from webui.api.roles import USER, needs, require_admin
from webui.api.schemas import native_request
from webui.api.sdapi import caller, check_modules, plugin_host, request_kinds
from webui.api.services import Services
from webui.api.waiting import Waiting
from webui.core import types
from webui.core.downloads.request import DownloadRequest
from webui.core.engine import VERSION
from webui.core.models.manager import ModelNotFound
from webui.core.tasks.extras import ExtrasRequest
from webui.core.types import RequestError

FINAL_STATES = ("done", "failed", "cancelled")
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
_NOSNIFF = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
# kind -> the request fields that hold images (sent base64, decoded here)
IMAGE_FIELDS: dict[str, tuple[str, ...]] = {"img2img": ("init_images", "mask")}


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "txt2img"
    request: dict[str, Any] = {}


def build_request(
    services: Services, body: SubmitBody
) -> types.GenerationRequest | ExtrasRequest | DownloadRequest:
    kinds = request_kinds()
    request_type = kinds.get(body.kind)
    if request_type is None:
        raise RequestError(
            "kind", f"unknown or unavailable job kind {body.kind!r}; valid: {', '.join(kinds)}"
        )
    if body.kind == "extras":
        return native_extras(services, body.request)
    if body.kind == "download":
        return native_download(body.request)
    image_fields = IMAGE_FIELDS.get(body.kind, ())
    opts = services.options
    decoded: dict[str, Any] = {}
    for name in image_fields:
        value = body.request.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            decoded[name] = tuple(
                images.decode_image(
                    v, f"{name}.{n}", max_bytes=opts.max_body_bytes, max_pixels=opts.max_image_pixels
                )
                for n, v in enumerate(value)
            )
        else:
            decoded[name] = images.decode_image(
                value, name, max_bytes=opts.max_body_bytes, max_pixels=opts.max_image_pixels
            )
    host = plugin_host(services)
    check = None
    if host is not None:

        def check(args: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
            return host.check_extension_args(args, max_pixels=opts.max_image_pixels)

    request = native_request(request_type, body.request, decoded, services.engine.samplers, check)
    try:
        services.manager.resolve(request.checkpoint)
    except ModelNotFound as e:
        raise RequestError("checkpoint", str(e)) from e
    try:
        services.manager.resolve_vae(request.vae)
    except ModelNotFound as e:
        raise RequestError("vae", str(e)) from e
    check_modules(services, request, "modules")
    return request


def _sse(seq: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def build_router(services: Services, waits: Waiting) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["jobs"])
    queue = services.queue

    def visible(request: Request, job_id: str) -> Any:
        user, admin = caller(request, services)
        try:
            info = queue.get(job_id)
        except LookupError:
            info = None
        if info is None or not can_see(info, user, admin):
            raise HTTPException(404, f"job {job_id!r} not found")
        return info

    @router.get("/health")
    async def health() -> Any:
        running = queue.running()
        return {
            "status": "ok",
            "version": VERSION,
            "queued": await waits.db(queue.queued_count),
            "running": running is not None,
        }

    @router.post("/jobs", status_code=201, dependencies=[needs(services, USER, "Submitting a job")])
    async def submit(body: SubmitBody, request: Request) -> Any:
        user, _ = caller(request, services)
        if body.kind == "download":  # a download writes into the shared model folders
            require_admin(user, services.options, "Downloading models")
        built = await waits.work(build_request, services, body)
        info = await waits.db(queue.submit, built, user)
        return {"id": info.id, "state": info.state.value, "queue_position": info.queue_position}

    @router.get("/jobs")
    async def list_jobs(request: Request, limit: int = 100) -> Any:
        user, admin = caller(request, services)
        limit = max(1, min(limit, 1000))
        infos = await waits.db(queue.list, None if admin else user, limit)
        return {"jobs": [job_json(i) for i in infos]}

    @router.get("/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> Any:
        return job_json(await waits.db(visible, request, job_id))

    @router.delete("/jobs/{job_id}")
    async def delete_job(job_id: str, request: Request) -> Any:
        """A finished job of yours: its images are deleted from disk and it leaves the history (409 while
        it is queued or running: cancel it first)."""
        info = await waits.db(visible, request, job_id)
        user, admin = caller(request, services)
        removed = await waits.db(queue.delete, info.id, user, admin)
        return {"id": info.id, "deleted": True, "files_removed": removed}

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request) -> Any:
        info = await waits.db(visible, request, job_id)
        user, admin = caller(request, services)
        return job_json(await waits.db(queue.cancel, info.id, user, admin))

    @router.post("/jobs/{job_id}/skip")
    async def skip(job_id: str, request: Request) -> Any:
        info = await waits.db(visible, request, job_id)
        user, admin = caller(request, services)
        return job_json(await waits.db(queue.skip, info.id, user, admin))

    @router.get("/jobs/{job_id}/images/{index}")
    async def image(job_id: str, index: str, request: Request) -> Any:
        info = await waits.db(visible, request, job_id)
        if index == "grid":
            recorded = info.grid_path
        elif index.isascii() and index.isdigit() and int(index) < len(info.images):
            recorded = info.images[int(index)].path
        else:
            raise HTTPException(404, "no such image")
        path = safe_result_path(result_roots(services), recorded)
        if path is None:
            raise HTTPException(404, "image file not found")
        media = _MEDIA.get(path.suffix.lower())
        if media is None:
            raise HTTPException(404, "image file not found")
        return FileResponse(path, media_type=media, headers=_NOSNIFF)

    @router.get("/jobs/{job_id}/preview")
    async def preview(job_id: str, request: Request) -> Any:
        info = await waits.db(visible, request, job_id)
        png = queue.latest_preview(info.id)
        if not png:
            return Response(status_code=204)
        return Response(png, media_type="image/png", headers={"X-Content-Type-Options": "nosniff"})

    @router.get("/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> Any:
        info = await waits.db(visible, request, job_id)
        last = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        after = int(last) if last.isascii() and last.isdigit() else 0
        return StreamingResponse(
            _event_stream(services, waits, info.id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


async def _event_stream(services: Services, waits: Waiting, job_id: str, after: int) -> AsyncIterator[str]:
    """Long-poll the job's events (no thread held while waiting) and forward each; end after the final one."""
    queue = services.queue
    yield "retry: 2000\n\n"
    while True:
        batch = await waits.events(job_id, after, services.options.events_poll)
        for event in batch:
            after = max(after, event.seq)
            data = {"seq": event.seq, "kind": event.kind, "job": job_json(event.info)}
            yield _sse(event.seq, event.kind, data)
            if event.kind in FINAL_STATES:
                return
        if not batch:
            # A job that finished before `after` (or whose events were dropped): say so once, and end.
            info = await waits.db(queue.get, job_id)
            final = info.state.value
            if final in FINAL_STATES and not await waits.db(queue.events, job_id, after, 0):
                yield _sse(after, final, {"seq": after, "kind": final, "job": job_json(info)})
                return
            yield ": keep-alive\n\n"
