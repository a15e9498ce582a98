"""The HTTP routes extensions declare (`RouteSpec`), mounted on the app like its own routes.

Each route is served at `/api/v1/extensions/<extension name><path>`; a route marked `root` (an A1111
extension's own API, such as `/controlnet/version`) at its path itself, only when the A1111 API is on
(`--api`) and only under `/<extension name>/` (or `/<name>/` for a name in its manifest's
`a1111_names`). They sit inside the app, so the same middleware guards them as every other route:
the login (401 without one, when users are configured), the host check, the cross-site and body-size
guards. A route whose endpoint FastAPI cannot mount is logged and left out;
the others still mount.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from webui.plugins.host import PluginHost

log = logging.getLogger("sfumato.api")
PREFIX = "/api/v1/extensions"


def route_path(extension: str, path: str, root: bool) -> str:
    return path if root else f"{PREFIX}/{extension}{path}"


def build_router(host: PluginHost, *, sdapi: bool, services: Any = None) -> APIRouter:
    """Every route the extensions declare; with `services`, a route that is not a GET needs the
    "user" role (a viewer may read, never make or change anything)."""
    from webui.api.roles import USER, needs

    router = APIRouter()
    for extension, spec in host.routes():
        if spec.root and not sdapi:
            continue
        prefixes = [f"/{n.casefold()}/" for n in host.a1111_names(extension)]
        if spec.root and not any((spec.path.casefold() + "/").startswith(p) for p in prefixes):
            log.warning(
                "extension %s: route %s must start with one of %s; not mounted",
                extension,
                spec.path,
                ", ".join(prefixes),
            )
            continue
        path = route_path(extension, spec.path, spec.root)
        try:
            router.add_api_route(
                path,
                spec.endpoint,
                methods=list(spec.methods),
                summary=spec.summary or None,
                tags=[f"extension: {extension}"],
                dependencies=[needs(services, USER, f"{extension}'s {spec.path}")]
                if services is not None and set(spec.methods) - {"GET", "HEAD"}
                else None,
            )
        except Exception as e:  # a bad endpoint signature must not stop the server
            log.warning("extension %s: route %s not mounted: %s", extension, path, e)
    return router
