"""A1111's Extras routes: POST /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images.

Each call is one "extras" job in the caller's name (the same fair queue as generation, so an upscale
on the GPU never runs beside a sampling job). Shapes as A1111 v1.10: the single route answers
`{"html_info", "image"}`, the batch route `{"html_info", "images"}`. As in A1111's API, nothing is
written to outputs/ (the images are kept in the job's folder). Face restoration takes A1111's
`gfpgan_visibility`, `codeformer_visibility` and `codeformer_weight`; asking for a restorer whose model
is not installed is a 422 naming the field and the folder its file goes in.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from webui.api import images
from webui.api.jobview import result_roots, safe_result_path
from webui.api.roles import USER, needs
from webui.api.sdapi import caller
from webui.api.services import Services
from webui.api.waiting import Waiting
from webui.core.tasks.extras import (
    MAX_IMAGES,
    ExtrasRequest,
    check_upscalers,
    face_restorers,
    postprocess_text,
)
from webui.core.types import RequestError

_SETTINGS = (
    "resize_mode",
    "upscaling_resize",
    "upscaling_resize_w",
    "upscaling_resize_h",
    "upscaling_crop",
    "upscaler_1",
    "upscaler_2",
    "extras_upscaler_2_visibility",
    "gfpgan_visibility",
    "codeformer_visibility",
    "codeformer_weight",
)


class A1111Extras(BaseModel):
    resize_mode: int = 0
    show_extras_results: bool = True  # A1111: "Should the backend return the generated image?"
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class A1111ExtrasSingle(A1111Extras):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class A1111ExtrasBatch(A1111Extras):
    image_list: list[FileData] = Field(default_factory=list, alias="imageList")


def build_request(services: Services, payload: A1111Extras, encoded: list[str]) -> ExtrasRequest:
    """The core request from an A1111 payload (images decoded with the server's limits, names checked)."""
    if not encoded:
        raise RequestError("image" if isinstance(payload, A1111ExtrasSingle) else "imageList", "no image")
    if len(encoded) > MAX_IMAGES:  # before decoding any of them
        raise RequestError("imageList", f"holds {len(encoded)} images (limit {MAX_IMAGES} a request)")
    single = isinstance(payload, A1111ExtrasSingle)
    names = ["image"] if single else [f"imageList.{i}.data" for i in range(len(encoded))]
    settings = {name: getattr(payload, name) for name in _SETTINGS}
    return _checked_request(services, encoded, names, None, {**settings, "save_images": False})


def _checked_request(
    services: Services, encoded: list[Any], names: list[str], field: str | None, settings: dict[str, Any]
) -> ExtrasRequest:
    """Decode each image (with the server's limits, errors naming `names[i]`), build the request, check
    its values and upscaler names."""
    opts = services.options
    decoded = [
        images.decode_image(data, name, max_bytes=opts.max_body_bytes, max_pixels=opts.max_image_pixels)
        for name, data in zip(names, encoded, strict=True)
    ]
    request = ExtrasRequest.from_images(decoded, field=field, **settings)
    request.validate()
    check_upscalers(request, services.engine.extras_upscalers())
    for kind, name in face_restorers(request).items():
        services.engine.faces.check(kind, name)
    return request


async def run_job(
    services: Services, waits: Waiting, user: str, request: ExtrasRequest
) -> tuple[list[str], Any]:
    """Submit, wait (no thread held; at most `waits.per_user` at once per user), and return the images
    (base64 PNG) or an error response."""
    with waits.slot(user):
        info = await waits.db(services.queue.submit, request, user)
        info = await waits.finished(info.id, services.options.wait_timeout)
    if not info.state.finished:
        detail = f"job {info.id} is still {info.state.value}"
        return [], JSONResponse({"error": "Timeout", "detail": detail, "job": info.id}, status_code=504)
    if info.state.value == "failed":
        body = {"error": "ExtrasFailed", "detail": info.error, "errors": info.error, "job": info.id}
        return [], JSONResponse(body, status_code=500)
    roots = result_roots(services)

    def encode() -> list[str]:
        paths = [safe_result_path(roots, image.path) for image in info.images]
        return [images.file_b64(p) for p in paths if p is not None]

    return await waits.work(encode), None


def native_extras(services: Services, data: Mapping[str, Any]) -> ExtrasRequest:
    """An extras job from the native API: `images` (a list of base64 images) and our field names."""
    if not isinstance(data, Mapping):
        raise RequestError("request", "must be an object of request fields")
    encoded = data.get("images")
    if not isinstance(encoded, list) or not encoded:
        raise RequestError("images", "must be a non-empty list of base64-encoded images")
    if len(encoded) > MAX_IMAGES:
        raise RequestError("images", f"holds {len(encoded)} images (limit {MAX_IMAGES} a job)")
    known = set(ExtrasRequest.field_names()) - {"images", "source_infotexts"}
    for key in data:
        if key != "images" and key not in known:
            raise RequestError(
                key, f"unknown field for an extras job (known: images, {', '.join(sorted(known))})"
            )
    settings = {k: v for k, v in data.items() if k != "images"}
    names = [f"images.{i}" for i in range(len(encoded))]
    return _checked_request(services, encoded, names, "images", settings)


def html_info(request: ExtrasRequest) -> str:
    return f"<p>{html.escape(postprocess_text(request))}</p>"


def build_router(services: Services, waits: Waiting) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])
    upscaling = needs(services, USER, "Upscaling images")

    @router.post("/extra-single-image", dependencies=[upscaling])
    async def extra_single_image(payload: A1111ExtrasSingle, request: Request) -> Any:
        built = await waits.work(build_request, services, payload, [payload.image] if payload.image else [])
        encoded, error = await run_job(services, waits, caller(request, services)[0], built)
        if error is not None:
            return error
        shown = encoded[0] if encoded and payload.show_extras_results else ""
        return {"html_info": html_info(built), "image": shown}

    @router.post("/extra-batch-images", dependencies=[upscaling])
    async def extra_batch_images(payload: A1111ExtrasBatch, request: Request) -> Any:
        data = [f.data for f in payload.image_list]
        built = await waits.work(build_request, services, payload, data)
        encoded, error = await run_job(services, waits, caller(request, services)[0], built)
        if error is not None:
            return error
        return {"html_info": html_info(built), "images": encoded if payload.show_extras_results else []}

    return router
