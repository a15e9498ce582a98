"""Downloads over HTTP: `POST /api/v1/jobs {"kind": "download", "request": {...}}` (see jobs_api) and
the download settings an admin keeps server-side.

- `native_download(data)`: the DownloadRequest of a job's `request` object (`url`, `sha256`, `kind`,
  `filename`; anything else or a non-text value is a 422 naming the field).
- `GET /api/v1/downloads/starters`: the built-in starter models (name, size, license, URL); nothing is
  fetched until someone submits one as a download job.
- `GET /api/v1/downloads/settings`: the allow-list in use and whether each token is stored (never the
  token); `POST` the same (admins): `download_hosts`, `hf_token`, `civitai_api_key` ("" clears one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from webui.api.roles import ADMIN, needs
from webui.api.services import Services
from webui.core.downloads.job import policy_of
from webui.core.downloads.request import KINDS, DownloadRequest
from webui.core.downloads.starters import STARTERS
from webui.core.types import RequestError

DOWNLOAD_FIELDS = ("url", "sha256", "kind", "filename")
TOKEN_KEYS = ("hf_token", "civitai_api_key")


def native_download(data: Mapping[str, Any]) -> DownloadRequest:
    if not isinstance(data, Mapping):
        raise RequestError("request", "must be an object with url (and optionally sha256, kind, filename)")
    for key, value in data.items():
        if key not in DOWNLOAD_FIELDS:
            raise RequestError(key, f"unknown field for a download; valid: {', '.join(DOWNLOAD_FIELDS)}")
        if not isinstance(value, str):
            raise RequestError(key, "must be text")
    request = DownloadRequest(**{k: v.strip() for k, v in data.items()})
    request.validate()
    return request


class DownloadSettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    download_hosts: str | None = None
    hf_token: str | None = None
    civitai_api_key: str | None = None


def settings_view(services: Services) -> dict[str, Any]:
    policy = policy_of(services.config, services.settings.get)
    return {
        "allowed_hosts": list(policy.allowed),
        "download_hosts": services.settings.get("download_hosts") or "",
        "flag_hosts": list(services.config.download_hosts),
        "hf_token_set": bool(services.settings.get("hf_token")),
        "civitai_api_key_set": bool(services.settings.get("civitai_api_key")),
        "kinds": dict(KINDS),
    }


def build_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/api/v1/downloads", tags=["downloads"])
    admin = needs(services, ADMIN, "Changing the download settings")

    @router.get("/starters")
    async def starters() -> Any:
        return [s.as_json() for s in STARTERS]

    @router.get("/settings", dependencies=[needs(services, ADMIN, "Reading the download settings")])
    async def read_settings() -> Any:
        return settings_view(services)

    @router.post("/settings", dependencies=[admin])
    async def write_settings(body: DownloadSettingsBody) -> Any:
        changes = {k: v.strip() for k, v in body.model_dump().items() if v is not None}
        if changes:
            await run_in_threadpool(services.settings.update, changes)
        return settings_view(services)

    return router
