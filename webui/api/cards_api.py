"""`/api/v1/cards`: the model library (webui.core.library) over HTTP.

- `GET /api/v1/cards?q=&kind=&base=&sort=&offset=0&limit=100`: the cards matching every word of `q`
  (name, folder, kind, base, sidecar description / activation text / notes), of one `kind` (checkpoint,
  lora, embedding, vae, upscaler, controlnet, text_encoder) and one `base` (sd1, sd2, sdxl, sd3, flux, or
  Civitai's words for them); `sort`: name, date (newest first), size (largest first) or base, else
  folder order; `total` counts them all, `counts` the cards of each kind; a card with a preview has its
  `preview_url`.
- `GET /api/v1/cards/info?kind=&file=`: one card with its safetensors header metadata (as
  /sdapi/v1/loras gives it) and its most frequent training tags (kohya's `ss_tag_frequency`).
- `GET /api/v1/cards/preview?kind=&file=`: a card's preview picture, only from inside the model folder
  its card was listed in (a `..`, an absolute path or a symlink out is refused).
- `POST /api/v1/cards/refresh`: rescan the model folders (files added or removed by hand); admin-only
  when there are logins, as A1111's refresh routes (which rescan the library too).
- `POST /api/v1/cards/user-metadata {"kind", "file", "user_metadata": {"description", "activation text",
  "preferred weight", "negative text", "sd version", "notes"}}`: merge into the A1111 sidecar `name.json`
  (written atomically; other keys kept; "" clears one). Admin-only when there are logins.
- `POST /api/v1/cards/fetch-info {"kind", "file", "replace_preview": false}`: look the file up on Civitai
  by its sha256 (base URL `--civitai-url`; the host must pass the download allow-list), save its first
  picture as `name.preview.png` and fill the sidecar keys left empty. Admin-only when there are logins.
  404 when Civitai does not know the file, 502 when it cannot be asked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from webui.api.roles import ADMIN, needs
from webui.api.services import Services
from webui.core.library import actions, civitai
from webui.core.library.cards import KINDS, SORTS, CardLibrary
from webui.core.types import RequestError

MAX_LIMIT = 1000
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}  # fmt: skip


class CardName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    file: str


class UserMetadataBody(CardName):
    user_metadata: dict[str, Any] = Field(default_factory=dict)


class FetchInfoBody(CardName):
    replace_preview: bool = False


def listing(
    library: CardLibrary, q: str, kind: str, base: str, offset: int, limit: int, sort: str = ""
) -> dict[str, Any]:
    if sort not in SORTS:
        raise RequestError("sort", f"unknown sort {sort!r} (known: {', '.join(s for s in SORTS if s)})")
    if kind and kind not in KINDS:
        raise RequestError("kind", f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestError("limit", f"must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise RequestError("offset", "must be 0 or more")
    found = library.search(q, kind, base, sort)
    return {
        "cards": [c.to_json() for c in found[offset : offset + limit]],
        "total": len(found),
        "counts": library.counts(),
        "problems": list(library.problems),
    }


def build_router(services: Services, library: CardLibrary) -> APIRouter:
    router = APIRouter(prefix="/api/v1/cards")

    def not_found(e: LookupError) -> HTTPException:
        return HTTPException(404, str(e).strip("'\""))

    @router.get("")
    def cards(
        q: str = "", kind: str = "", base: str = "", sort: str = "", offset: int = 0, limit: int = 100
    ) -> Any:
        return listing(library, q, kind, base, offset, limit, sort)

    @router.get("/preview")
    def preview(kind: str, file: str) -> FileResponse:
        try:
            path = actions.preview_of(library, kind, file)
        except actions.CardNotFound as e:
            raise not_found(e) from e
        media = MEDIA_TYPES.get(path.suffix.lower())
        if media is None:
            raise HTTPException(404, f"{file} has no preview picture")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=60"}
        return FileResponse(path, media_type=media, headers=headers)

    @router.get("/info")
    def info(kind: str, file: str) -> dict[str, Any]:
        try:
            card = actions.card_of(library, kind, file)
        except actions.CardNotFound as e:
            raise not_found(e) from e
        metadata = actions.header_metadata(card)
        return {
            **card.to_json(),
            "metadata": metadata,
            "training_tags": [{"tag": t, "count": n} for t, n in actions.training_tags(metadata)],
        }

    @router.post("/refresh", dependencies=[needs(services, ADMIN, "Refreshing the model lists")])
    async def refresh() -> dict[str, Any]:
        problems = await run_in_threadpool(library.refresh)
        return {"counts": library.counts(), "problems": list(problems)}

    writing = needs(services, ADMIN, "Editing a model's notes (they are shared by every user)")

    @router.post("/user-metadata", dependencies=[writing])
    def user_metadata(body: UserMetadataBody) -> dict[str, Any]:
        try:
            card = actions.save_user_metadata(library, body.kind, body.file, body.user_metadata)
        except actions.CardNotFound as e:
            raise not_found(e) from e
        return card.to_json()

    fetching = needs(services, ADMIN, "Fetching a model's info from Civitai (it writes beside the model)")

    @router.post("/fetch-info", dependencies=[fetching])
    def fetch_info(body: FetchInfoBody) -> Any:
        try:
            result = actions.fetch_info(
                library, body.kind, body.file, services.config, services.settings.get,
                replace_preview=body.replace_preview,
            )  # fmt: skip
        except (actions.CardNotFound, civitai.NotOnCivitai) as e:
            raise not_found(e) from e
        except civitai.CivitaiError as e:
            return JSONResponse({"detail": str(e), "error": "CivitaiError"}, status_code=502)
        return {
            "card": result.card.to_json(),
            "message": result.message(),
            "sha256": result.sha256,
            "wrote_preview": result.wrote_preview,
            "filled": list(result.filled),
            "civitai": {
                "model_id": result.info.model_id,
                "version_id": result.info.version_id,
                "model_name": result.info.model_name,
                "version_name": result.info.version_name,
                "base_model": result.info.base_model,
            },
        }

    return router
