"""AUTOMATIC1111's `/sdapi/v1` routes, in A1111 v1.10's shapes, over the job queue.

Blocking calls (txt2img, img2img) submit a job in the caller's name and wait for it without holding a
thread (webui.api.waiting), so they stand in the same fair queue as the browser and the native API.
Progress, interrupt and skip act on the caller's own job (or, for progress, on the running one when
the caller has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from webui.api import adapters, builtin_scripts, images, model_lists
from webui.api.auth import scope_user
from webui.api.jobview import a1111_info, a1111_progress, result_roots, safe_result_path
from webui.api.redact import public_text
from webui.api.request_errors import request_error_response
from webui.api.roles import ADMIN, USER, is_admin, needs, require_admin
from webui.api.schemas import A1111Img2Img, A1111Processing, A1111Txt2Img, to_request
from webui.api.scripts import find_script, run_script, script_values
from webui.api.services import ANONYMOUS, Services
from webui.api.waiting import Waiting
from webui.core import types
from webui.core.engine import VERSION
from webui.core.models.checkpoint_file import CheckpointError
from webui.core.models.manager import ModelNotFound
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.infotext_defaults import with_a1111_defaults
from webui.core.outputs.saving import PARAMETERS_KEY, read_infotext
from webui.core.sampling.samplers import list_schedulers
from webui.core.tasks.hires import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, check_upscaler
from webui.core.types import RequestError
from webui.plugins.a1111 import alwayson_to_extension_args, sdapi_extensions, sdapi_script_info, sdapi_scripts
from webui.plugins.descriptors import ScriptSpec
from webui.plugins.host import PluginHost

UPSCALERS = tuple(IMAGE_UPSCALERS)  # picture upscalers; the latent ones are listed by latent-upscale-modes


class PngInfoRequest(BaseModel):
    image: str = ""


def request_kinds() -> dict[str, type[types.GenerationRequest]]:
    """The request kinds the job queue can store and run ("txt2img", and "img2img" once it is added)."""
    from webui.core.jobs import REQUEST_KINDS

    return dict(REQUEST_KINDS)


def caller(request: Request, services: Services) -> tuple[str, bool]:
    """(user name, is admin) of the request: the authenticated user, or "anonymous" without auth."""
    user = scope_user(request.scope, ANONYMOUS)
    return user, is_admin(user, services.options)


def _active_job(services: Services, user: str) -> Any | None:
    """The caller's running job, else their next queued one, else None."""
    mine = [j for j in services.queue.list(owner=user, limit=50) if not j.state.finished]
    running = [j for j in mine if j.state.value == "running"]
    if running:
        return running[0]
    queued = sorted(mine, key=lambda j: (j.queue_position or 0, j.created))
    return queued[0] if queued else None


def _callers_running(services: Services, user: str, admin: bool) -> Any | None:
    """The running job /interrupt and /skip act on (A1111 has one): with several workers, the caller's
    own job that started first (an admin: anyone's), else None."""
    for info in services.queue.running_jobs():
        if admin or info.owner == user:
            return info
    return None


def plugin_host(services: Services) -> PluginHost | None:
    """The extensions host the engine runs with (None when it runs without extensions)."""
    hooks = services.engine.hooks
    return hooks if isinstance(hooks, PluginHost) else None


def alwayson(services: Services) -> Callable[[Mapping[str, Any]], dict[str, dict[str, Any]]] | None:
    """`alwayson_scripts` -> extension_args, when extensions are loaded."""
    host = plugin_host(services)
    if host is None:
        return None
    limit = services.options.max_image_pixels
    return lambda scripts: alwayson_to_extension_args(host, scripts, max_pixels=limit)


def check_models(services: Services, request: types.GenerationRequest, payload: A1111Processing) -> None:
    """Unknown checkpoint or VAE -> RequestError listing the valid names (before the job is queued)."""
    overrides = payload.override_settings or {}
    try:
        services.manager.resolve(request.checkpoint)
    except ModelNotFound as e:
        where = "override_settings." if "sd_model_checkpoint" in overrides else ""
        raise RequestError(f"{where}sd_model_checkpoint", str(e)) from e
    try:
        services.manager.resolve_vae(request.vae)
    except ModelNotFound as e:
        raise RequestError(("override_settings." if "sd_vae" in overrides else "") + "sd_vae", str(e)) from e
    check_modules(services, request)
    if isinstance(request, types.Txt2ImgRequest) and request.enable_hr:
        check_upscaler(request.hr_upscaler, services.engine.hooks.image_upscalers())


def check_modules(
    services: Services, request: types.GenerationRequest, field: str = "forge_additional_modules"
) -> None:
    """The request's modules (A1111 API: `forge_additional_modules`; native: `modules`) are listed files
    (GET sd-modules), for a model that is assembled from them."""
    if not request.modules:
        return
    try:
        services.manager.resolve_modules(request.modules)
    except ModelNotFound as e:
        raise RequestError(field, str(e)) from e
    family = services.checkpoint_family(request.checkpoint)
    if family is None or not family.flow_matching:
        raise RequestError(field, "only SD3 and Flux models are assembled from modules; send an empty list")


def _result_images(services: Services, info: Any, payload: A1111Processing) -> tuple[list[str], int]:
    out: list[str] = []
    first = 0
    roots = result_roots(services)
    grid = safe_result_path(roots, info.grid_path)
    if grid is not None and not payload.do_not_save_grid and len(info.images) > 1:
        out.append(images.file_b64(grid))
        first = 1
    for image in info.images:
        path = safe_result_path(roots, image.path)
        if path is not None:
            out.append(images.file_b64(path))
    return out, first


async def generate(
    services: Services,
    waits: Waiting,
    request: Request,
    payload: A1111Processing,
    built: types.GenerationRequest,
    script: ScriptSpec | None = None,
) -> Any:
    user, _ = caller(request, services)
    check_models(services, built, payload)
    with waits.slot(user):
        return await _generate(services, waits, user, payload, built, script)


async def _generate(
    services: Services,
    waits: Waiting,
    user: str,
    payload: A1111Processing,
    built: types.GenerationRequest,
    script: ScriptSpec | None,
) -> Any:
    if script is not None:
        values = script_values(script, payload.script_args)
        body = await waits.script(
            run_script, script, built, values, services.queue, user, services.options.wait_timeout
        )
        return {
            **body,
            "images": body["images"] if payload.send_images else [],
            "parameters": payload.model_dump(),
        }
    info = await waits.db(services.queue.submit, built, user)
    info = await waits.finished(info.id, services.options.wait_timeout)
    if not info.state.finished:
        return JSONResponse(
            {"error": "Timeout", "detail": f"job {info.id} is still {info.state.value}", "job": info.id},
            status_code=504,
        )
    if info.state.value == "failed" and info.error_field:  # a bad value only the loaded model could see
        message = (info.error or "").removeprefix(f"{info.error_field}: ")
        return request_error_response(info.error_field, message)
    if info.state.value == "failed":
        error = public_text(info.error)
        return JSONResponse(
            {"error": "GenerationFailed", "detail": error, "errors": error, "job": info.id},
            status_code=500,
        )
    encoded, first = await waits.work(_result_images, services, info, payload)
    parameters = payload.model_dump()
    if not getattr(payload, "include_init_images", False):  # A1111: echoed only when asked for
        for key in ("init_images", "mask"):
            if key in parameters:
                parameters[key] = None
    return {
        "images": encoded if payload.send_images else [],
        "parameters": parameters,
        "info": a1111_info(info, built, first, VERSION),
    }


def build_router(services: Services, waits: Waiting) -> APIRouter:  # noqa: C901 - one small function per route
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])
    opts = services.options
    generating = needs(services, USER, "Generating images")

    @router.post("/txt2img", dependencies=[generating])
    async def txt2img(payload: A1111Txt2Img, request: Request) -> Any:
        script = find_script(plugin_host(services), payload.script_name, "txt2img")
        built = to_request(
            payload,
            types.Txt2ImgRequest,
            services.settings.get,
            alwayson=alwayson(services),
            script=bool(script),
            samplers=services.engine.samplers,
        )
        return await generate(services, waits, request, payload, built, script)

    @router.post("/img2img", dependencies=[generating])
    async def img2img(payload: A1111Img2Img, request: Request) -> Any:
        request_type = request_kinds().get("img2img")
        if request_type is None:
            raise HTTPException(422, "img2img is not available yet")
        if payload.mask_blur is not None:
            payload = payload.model_copy(
                update={"mask_blur_x": payload.mask_blur, "mask_blur_y": payload.mask_blur}
            )
        decoded = await waits.work(
            _decode_img2img_images, payload, opts.max_body_bytes, opts.max_image_pixels
        )
        script = find_script(plugin_host(services), payload.script_name, "img2img")
        built = to_request(
            payload,
            request_type,
            services.settings.get,
            decoded,
            alwayson=alwayson(services),
            script=bool(script),
            samplers=services.engine.samplers,
        )
        return await generate(services, waits, request, payload, built, script)

    @router.get("/progress")
    async def progress(request: Request, skip_current_image: bool = False) -> Any:
        user, admin = caller(request, services)
        info = await waits.db(_active_job, services, user)
        if info is None:
            info = services.queue.running()
        mine = info is not None and (admin or info.owner == user)
        preview = None
        if info is not None and mine and not skip_current_image:
            png = services.queue.latest_preview(info.id)
            preview = images.b64(png) if png else None
        body = a1111_progress(info, await waits.db(services.queue.queued_count), preview)
        if info is not None and not mine:  # somebody else's job: how busy we are, not what they make
            body["current_task"] = None
        return body

    @router.post("/interrupt")
    async def interrupt(request: Request) -> Any:
        user, admin = caller(request, services)
        running = _callers_running(services, user, admin)
        if running is not None:
            await waits.db(services.queue.cancel, running.id, user, admin)
        return {}

    @router.post("/skip")
    async def skip(request: Request) -> Any:
        user, admin = caller(request, services)
        running = _callers_running(services, user, admin)
        if running is not None:
            await waits.db(services.queue.skip, running.id, user, admin)
        return None

    @router.get("/options")
    async def get_options() -> Any:
        return services.settings.as_dict()

    @router.post("/options", dependencies=[needs(services, ADMIN, "Changing server settings")])
    async def set_options(changes: dict[str, Any]) -> Any:

        def validate_checkpoint(name: str) -> None:
            try:
                services.manager.resolve(name)
            except ModelNotFound as e:
                raise RequestError("sd_model_checkpoint", str(e)) from e

        def validate_vae(name: str) -> None:
            try:
                services.manager.resolve_vae(name)
            except ModelNotFound as e:
                raise RequestError("sd_vae", str(e)) from e

        host = plugin_host(services)
        if host is not None:  # extension settings: checked against the extension's own fields
            changes = {**changes, **host.check_settings(changes)}
        await run_in_threadpool(services.settings.update, changes, validate_checkpoint, validate_vae)
        return None

    @router.get("/cmd-flags")
    async def cmd_flags() -> Any:
        return dict(opts.cmd_flags)

    @router.get("/samplers")
    async def samplers() -> Any:
        return services.engine.samplers.list_samplers()

    @router.get("/schedulers")
    async def schedulers() -> Any:
        return list_schedulers()

    @router.get("/upscalers")
    async def upscalers() -> Any:
        builtin = [
            {"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
            for n in UPSCALERS
        ]
        host = plugin_host(services)
        extra = [
            {
                "name": name,
                "model_name": name,
                "model_path": str(spec.path) if spec.path else None,
                "model_url": None,
                "scale": spec.scale,
            }
            for name, spec in (host.upscalers().items() if host else ())
        ]
        return builtin + extra

    @router.get("/latent-upscale-modes")
    async def latent_upscale_modes() -> Any:
        return [{"name": n} for n in LATENT_UPSCALE_MODES]

    @router.get("/sd-models")
    async def sd_models() -> Any:
        return await run_in_threadpool(model_lists.sd_models, services.manager)

    @router.get("/sd-modules")
    async def sd_modules() -> Any:
        return model_lists.sd_modules(services.manager)

    @router.get("/sd-vae")
    async def sd_vae() -> Any:
        return [{"model_name": f.model_name, "filename": str(f.path)} for f in services.manager.vaes()]

    @router.get("/prompt-styles")
    async def prompt_styles() -> Any:
        return await run_in_threadpool(adapters.styles_listing, services.engine)

    @router.get("/embeddings")
    async def get_embeddings() -> Any:
        return await run_in_threadpool(adapters.embeddings_listing, services.engine)

    @router.get("/loras")
    async def loras() -> Any:
        return await run_in_threadpool(adapters.loras_listing, services.engine)

    @router.get("/hypernetworks")
    async def hypernetworks() -> Any:
        return []

    @router.get("/face-restorers")
    async def face_restorers() -> Any:
        return await run_in_threadpool(adapters.face_restorers_listing, services.engine)

    @router.get("/realesrgan-models")
    async def realesrgan_models() -> Any:
        return []

    @router.get("/scripts")
    async def scripts() -> Any:
        host = plugin_host(services)
        listed = sdapi_scripts(host) if host else {"txt2img": [], "img2img": []}
        return {**listed, "img2img": [*listed["img2img"], builtin_scripts.TITLE]}

    @router.get("/script-info")
    async def script_info() -> Any:
        host = plugin_host(services)
        return [*(sdapi_script_info(host) if host else []), builtin_scripts.script_info()]

    @router.get("/extensions")
    async def extensions() -> Any:
        host = plugin_host(services)
        return await run_in_threadpool(sdapi_extensions, host) if host else []

    @router.get("/memory")
    async def memory() -> Any:
        return await run_in_threadpool(adapters.memory)

    @router.post("/png-info")
    async def png_info(body: PngInfoRequest) -> Any:
        return await run_in_threadpool(_png_info, body.image, opts.max_body_bytes, opts.max_image_pixels)

    def managers() -> list[Any]:
        """The model manager of every job worker (each has its own list and cache), the API's first."""
        engines = getattr(services.queue, "engines", ())
        found = [services.manager, *(e.manager for e in engines)]
        return list({id(m): m for m in found}.values())

    def refresh_all() -> tuple[str, ...]:
        problems: tuple[str, ...] = ()
        for m in managers():
            problems = m.refresh()
        if services.cards is not None:  # the model library lists the same folders
            services.cards.refresh()
        return problems

    async def _refresh(request: Request) -> Any:
        require_admin(caller(request, services)[0], opts, "Refreshing the model lists")
        problems = await run_in_threadpool(refresh_all)
        return {"problems": list(problems)} if problems else {}

    @router.post("/unload-checkpoint")
    async def unload_checkpoint(request: Request) -> Any:
        """A1111: free the loaded model. Here every worker drops the models it caches (a running job's
        model goes when that job ends); the next job loads its checkpoint again."""
        require_admin(caller(request, services)[0], opts, "Unloading the checkpoint")
        await run_in_threadpool(lambda: [m.unload() for m in managers()])
        return {}

    @router.post("/reload-checkpoint")
    async def reload_checkpoint(request: Request) -> Any:
        """A1111: load the current checkpoint back. Here every worker loads the settings' checkpoint
        (sd_model_checkpoint, else the first listed) and VAE into its cache."""
        require_admin(caller(request, services)[0], opts, "Reloading the checkpoint")
        checkpoint = services.settings.get("sd_model_checkpoint")
        vae = services.settings.get("sd_vae")

        def load() -> None:
            for m in managers():
                try:
                    m.preload(checkpoint, vae)
                except ModelNotFound as e:
                    raise RequestError("sd_vae" if e.kind == "VAE" else "sd_model_checkpoint", str(e)) from e
                except CheckpointError as e:
                    raise RequestError("sd_model_checkpoint", f"cannot be loaded: {e}") from e

        await run_in_threadpool(load)
        return {}

    router.add_api_route("/refresh-checkpoints", _refresh, methods=["POST"])
    router.add_api_route("/refresh-vae", _refresh, methods=["POST"])

    @router.post("/refresh-embeddings")
    async def refresh_embeddings(request: Request) -> Any:
        require_admin(caller(request, services)[0], opts, "Refreshing the embeddings")
        if services.cards is not None:
            await run_in_threadpool(services.cards.refresh)
        library = await run_in_threadpool(services.engine.embeddings.library)  # rescans what changed
        return {"problems": list(library.problems)} if library.problems else {}

    @router.post("/refresh-loras")
    async def refresh_loras(request: Request) -> Any:
        require_admin(caller(request, services)[0], opts, "Refreshing the LoRAs")
        if services.cards is not None:
            await run_in_threadpool(services.cards.refresh)
        return await run_in_threadpool(adapters.refresh_loras, services.engine)

    return router


def _decode_img2img_images(payload: A1111Img2Img, max_bytes: int, max_pixels: int) -> dict[str, Any]:
    if not payload.init_images:
        raise RequestError("init_images", "at least one init image is required")
    decoded = tuple(
        images.decode_image(d, f"init_images.{n}", max_bytes=max_bytes, max_pixels=max_pixels)
        for n, d in enumerate(payload.init_images)
    )
    mask = None
    if payload.mask:
        mask = images.decode_image(payload.mask, "mask", max_bytes=max_bytes, max_pixels=max_pixels)
    return {"init_images": decoded, "mask": mask}


def _png_info(data: str, max_bytes: int, max_pixels: int) -> dict[str, Any]:
    if not data.strip():
        return {"info": "", "items": {}, "parameters": {}}
    image = images.decode_image(data, "image", max_bytes=max_bytes, max_pixels=max_pixels)
    text = read_infotext(image) or ""
    items = {k: v for k, v in images.text_chunks(image).items() if k != PARAMETERS_KEY}
    parameters: dict[str, Any] = {}
    if text:  # the parameters as A1111's reader gives them: sizes split, defaults filled in
        parameters = with_a1111_defaults(parse_infotext(text))
    return {"info": text, "items": items, "parameters": parameters}
