"""`create_app(services, ui=None)`: the one FastAPI app of the server.

Our routes come first (native `/api/v1` always, `/sdapi/v1` when enabled); a Gradio UI, when given, is
mounted at "/" after them (a gr.Blocks, or a webui.ui.studio.Studio whose `mount_options` are passed
to `gr.mount_gradio_app`), behind the owner check of its file routes (webui.api.file_access) and of
its session hashes (webui.api.gradio_sessions). Over everything sit pure ASGI middlewares: the
cross-site/size guard, then, when users are configured, the login (so every route, /docs and the UI
need one; sessions are kept in <cache>/sessions.sqlite; accounts and API keys are served at /api/v1/me,
/keys and /users by webui.api.accounts_api), else each browser's own identity
(webui.api.identity), and outermost the Host check against DNS rebinding (webui.api.hosts), wrapped in
the no-framing headers (webui.api.framing).
The job queue starts with the app and is closed when it stops.
"""

from __future__ import annotations

import html
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from webui.api import (
    accounts_api,
    cards_api,
    downloads_api,
    extension_routes,
    extras_api,
    gallery_api,
    jobs_api,
    merge_api,
    sdapi,
    sessions_api,
    workers_api,
)
from webui.api.accounts import Accounts
from webui.api.auth import SESSION_SECONDS, BasicAuthMiddleware, scope_user
from webui.api.disconnects import DisconnectMiddleware
from webui.api.file_access import FileAccessMiddleware
from webui.api.framing import FrameGuardMiddleware
from webui.api.gradio_sessions import SessionBindingMiddleware
from webui.api.hosts import HostCheckMiddleware, HostPolicy
from webui.api.identity import BrowserIdentityMiddleware, identity_secret
from webui.api.redact import public_text
from webui.api.request_errors import request_error_response
from webui.api.security import SecurityMiddleware
from webui.api.services import ANONYMOUS, Services
from webui.api.sessions import SESSIONS_FILE, SessionStore
from webui.api.waiting import TooManyWaits, Waiting
from webui.core.disk import disk_full_message
from webui.core.engine import VERSION
from webui.core.types import RequestError

log = logging.getLogger("sfumato.api")


def _jobs_errors() -> dict[str, type[Exception]]:
    from webui.core import jobs

    return {
        "full": jobs.QueueFull,
        "missing": jobs.JobNotFound,
        "denied": jobs.NotAllowed,
        "unfinished": jobs.NotFinished,
    }


def _install_error_handlers(app: FastAPI) -> None:
    async def on_request_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return request_error_response(exc.field, exc.message)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        detail = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in errors
        ]
        return JSONResponse(
            {"detail": detail, "error": f"{field}: {first.get('msg', 'invalid')}", "field": field},
            status_code=422,
        )

    async def on_too_many_waits(_: Request, exc: Exception) -> JSONResponse:
        body = {"detail": str(exc), "error": "TooManyWaits"}
        return JSONResponse(body, status_code=429, headers={"Retry-After": "5"})

    async def on_os_error(_: Request, exc: Exception) -> JSONResponse:
        message = disk_full_message(exc)
        if message is None:
            raise exc  # any other failure: the server's usual 500, logged with its traceback
        log.error("%s", message)
        return JSONResponse({"detail": public_text(message), "error": "DiskFull"}, status_code=507)

    app.add_exception_handler(OSError, on_os_error)
    app.add_exception_handler(sqlite3.OperationalError, on_os_error)
    app.add_exception_handler(TooManyWaits, on_too_many_waits)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    errors = _jobs_errors()
    statuses = {"full": 429, "missing": 404, "denied": 403, "unfinished": 409}
    for key, exc_type in errors.items():

        async def handler(_: Request, exc: Exception, status: int = statuses[key]) -> JSONResponse:
            detail = public_text(str(exc))
            return JSONResponse({"detail": detail, "error": type(exc).__name__}, status_code=status)

        app.add_exception_handler(exc_type, handler)


def _home_page(services: Services) -> str:
    api = "<li><a href='/docs'>API documentation (/docs)</a></li>"
    sdapi_line = (
        "<li>A1111-compatible API at <code>/sdapi/v1</code></li>"
        if services.options.sdapi
        else "<li>The A1111-compatible API (<code>/sdapi/v1</code>) is off: start with --api for it</li>"
    )
    data = html.escape(str(services.config.data_dir))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Sfumato</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head><body>"
        f"<h1>Sfumato {html.escape(VERSION)}</h1>"
        "<p>The studio UI is off (started with --nowebui). The server and its APIs are running.</p>"
        f"<ul>{api}{sdapi_line}<li>Jobs API at <code>/api/v1/jobs</code></li></ul>"
        f"<p>Data folder: <code>{data}</code></p></body></html>"
    )


def _scan_quietly(gallery: Any) -> None:
    try:
        gallery.scan()
    except Exception as e:  # a gallery that cannot scan must not stop the server
        log.warning("gallery scan failed: %s", e)


def create_app(services: Services, ui: Any | None = None) -> FastAPI:
    """The server's ASGI app. `ui` is an optional gradio Blocks, mounted at "/" after our routes."""

    if services.options.auth and services.options.accounts is None:  # options made without build_options
        o = services.options
        services.options = replace(o, accounts=Accounts(o.users, o.admins, o.users_file))
    opts = services.options
    sessions = SessionStore(services.config.cache_dir / SESSIONS_FILE, SESSION_SECONDS) if opts.auth else None
    if sessions is not None and opts.accounts is not None:
        opts.accounts.on_logout.append(sessions.revoke_user)  # removed, or a new password: cookies end

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(services.queue.start)
        if services.gallery is not None:  # files added or removed while the server was down
            threading.Thread(target=_scan_quietly, args=(services.gallery,), daemon=True).start()
        try:
            yield
        finally:
            await run_in_threadpool(services.queue.close)
            if sessions is not None:
                sessions.close()
            if opts.accounts is not None:
                opts.accounts.flush_last_used()

    app = FastAPI(title="Sfumato", version=VERSION, lifespan=lifespan)
    _install_error_handlers(app)
    waits = Waiting(services.queue, per_user=services.options.max_waits_per_user)
    app.include_router(jobs_api.build_router(services, waits))
    app.include_router(workers_api.build_router(services, waits))
    app.include_router(downloads_api.build_router(services))
    if services.merges is not None:
        app.include_router(merge_api.build_router(services, services.merges))
    if services.gallery is not None:
        app.include_router(gallery_api.build_router(services, services.gallery))
    if services.cards is not None:
        app.include_router(cards_api.build_router(services, services.cards))
    if sessions is not None:
        app.include_router(sessions_api.build_router(sessions))
        app.include_router(accounts_api.build_router(services))
    if services.options.sdapi:
        app.include_router(sdapi.build_router(services, waits))
        app.include_router(extras_api.build_router(services, waits))
    host = sdapi.plugin_host(services)
    if host is not None:
        router = extension_routes.build_router(host, sdapi=services.options.sdapi, services=services)
        app.include_router(router)

    if ui is None:

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def home() -> HTMLResponse:
            return HTMLResponse(_home_page(services), headers={"X-Content-Type-Options": "nosniff"})

    else:
        import gradio as gr

        def auth_dependency(request: Request) -> str | None:
            # the logged-in user, or without a login the browser's own identity (else "anonymous")
            user = scope_user(request.scope, "" if services.options.auth else ANONYMOUS)
            return user or None

        studio = hasattr(ui, "mount_options")  # a webui.ui.studio.Studio, else a bare gr.Blocks
        blocks = ui.blocks if studio else ui
        mount_options = dict(ui.mount_options) if studio else {}
        mount_options.setdefault("max_file_size", services.options.max_body_bytes)
        app = gr.mount_gradio_app(
            app,
            blocks,
            path="/",
            auth_dependency=auth_dependency,
            ssr_mode=False,
            **mount_options,
        )
        app.add_middleware(FileAccessMiddleware, services=services)  # innermost: sees the user
        app.add_middleware(SessionBindingMiddleware, default_user="" if opts.auth else ANONYMOUS)

    if opts.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=True,
        )
    app.add_middleware(
        SecurityMiddleware, allowed_origins=opts.cors_origins, max_body_bytes=opts.max_body_bytes
    )
    if not opts.auth:  # one identity per browser (a signed cookie), where a login would put the user
        app.add_middleware(BrowserIdentityMiddleware, secret=identity_secret(services.config.cache_dir))
    if opts.auth:
        app.add_middleware(
            BasicAuthMiddleware,
            accounts=opts.accounts,
            delay=opts.auth_delay,
            delay_max=opts.auth_delay_max,
            sessions=sessions,
            allowed_origins=opts.cors_origins,
        )
    app.add_middleware(HostCheckMiddleware, policy=HostPolicy(opts.allowed_hosts, bind_host=opts.bind_host))
    app.add_middleware(FrameGuardMiddleware)  # every answer, refusals included
    app.add_middleware(DisconnectMiddleware)  # outermost: a client gone mid-request is one log line
    return app


__all__ = ["ANONYMOUS", "create_app"]
