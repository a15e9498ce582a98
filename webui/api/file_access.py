"""Result files only for their owner: a pure ASGI check in front of Gradio's file routes.

Gradio serves `/gradio_api/file=<path>` for any file under the studio's allowed folders (the outputs
folder and the job store's files), and output names are sequential, so without this check one user could
read another's images by guessing paths. A path inside those folders is served only to the owner of the
job that recorded it (its image, grid or input file) or to an admin (--admin); anybody else, and any
file no job records, gets 404, the same answer as a file that does not exist. Without a login the owner
is the browser's own identity (webui.api.identity) or the shared local user. Other paths (Gradio's own
cache of what it has shown a session, its static files) are left to Gradio's checks. The native route
(`/api/v1/jobs/{id}/images/{n}`) serves files by index from a job the caller may see.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from webui.api.auth import ASGIApp, Receive, Scope, Send, scope_user
from webui.api.roles import is_admin
from webui.api.services import ANONYMOUS, Services

FILE_PREFIXES = ("/gradio_api/file=", "/gradio_api/file/", "/file=", "/file/")


def requested_file(path: str) -> str | None:
    """The file path a Gradio file route asks for (None for other routes and for URLs)."""
    for prefix in FILE_PREFIXES:
        if path.startswith(prefix):
            target = path[len(prefix) :]
            return None if "://" in target else target
    return None


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


class FileAccessMiddleware:
    """404 for a result file the requesting user does not own (admins see all)."""

    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services

    def roots(self) -> list[Path]:
        folders = [self.services.config.outputs_dir, getattr(self.services.queue, "files_dir", None)]
        out: list[Path] = []
        for folder in folders:
            if folder is not None:
                out += [Path(os.path.abspath(folder)), Path(folder).resolve()]
        return out

    def may_read(self, target: str, user: str) -> bool:
        absolute = Path(os.path.abspath(target))
        real = absolute.resolve()
        roots = self.roots()
        if not (_inside(absolute, roots) or _inside(real, roots)):
            return True  # not a result file: Gradio's own checks decide
        if is_admin(user, self.services.options):
            return True
        owners = {self.services.queue.file_owner(p) for p in {absolute, real}}
        return user in owners

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = requested_file(scope.get("path", "")) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        user = scope_user(scope, "" if self.services.options.auth else ANONYMOUS)
        if await run_in_threadpool(self.may_read, target, user):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "file not found"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})
