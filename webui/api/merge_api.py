"""`/api/v1/merges`: the checkpoint merger over HTTP (the studio's Merge panel calls the same runner).

- `POST /api/v1/merges` with A1111's merger fields (`primary_model_name`, `secondary_model_name`,
  `tertiary_model_name`, `interp_method`, `multiplier`, `save_as_half`, `custom_name`,
  `checkpoint_format`, `bake_in_vae`, `discard_weights`, `save_metadata`) starts a merge: 202 with its
  status; 422 naming the field at fault; 409 while another merge runs. A merge writes into the shared
  checkpoint folder, so with logins only admins may start or cancel one (403 otherwise).
- `GET /api/v1/merges` lists recent merges, newest first; `GET /api/v1/merges/{id}` one merge
  (`state`: running, done, failed, cancelled; `written` of `total` tensors; `output`, the file name).
- `POST /api/v1/merges/{id}/cancel` stops a running merge; nothing is written.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from webui.api.roles import ADMIN, needs, require_admin
from webui.api.sdapi import caller
from webui.api.services import Services
from webui.core.models.merge import MergeError
from webui.core.models.merge_runs import MergeBusy, MergeRuns, MergeSpec
from webui.core.types import RequestError

_DEFAULTS = MergeSpec()


class MergeBody(BaseModel):
    """A1111's Checkpoint Merger fields; unknown fields are a 422."""

    model_config = ConfigDict(extra="forbid")

    primary_model_name: str
    secondary_model_name: str = _DEFAULTS.secondary_model_name
    tertiary_model_name: str = _DEFAULTS.tertiary_model_name
    interp_method: str = _DEFAULTS.interp_method
    multiplier: float = _DEFAULTS.multiplier
    save_as_half: bool = _DEFAULTS.save_as_half
    custom_name: str = _DEFAULTS.custom_name
    checkpoint_format: str = _DEFAULTS.checkpoint_format
    bake_in_vae: str = _DEFAULTS.bake_in_vae
    discard_weights: str = _DEFAULTS.discard_weights
    save_metadata: bool = _DEFAULTS.save_metadata


def spec_of(body: MergeBody) -> MergeSpec:
    return MergeSpec(**{f.name: getattr(body, f.name) for f in fields(MergeSpec)})


def build_router(services: Services, runs: MergeRuns) -> APIRouter:
    router = APIRouter(prefix="/api/v1/merges")

    def found(run_id: str) -> dict[str, Any]:
        status = runs.status(run_id)
        if status is None:
            raise HTTPException(404, f"no merge {run_id!r}")
        return status.as_json()

    merging = needs(services, ADMIN, "Merging checkpoints (it writes into the shared model folder)")

    @router.post("", status_code=202, dependencies=[merging])
    def start(body: MergeBody, request: Request) -> Any:
        user = caller(request, services)[0]
        try:
            return runs.start(spec_of(body), user).as_json()
        except MergeError as e:
            raise RequestError(e.field, str(e).split(": ", 1)[-1]) from e
        except MergeBusy as e:
            return JSONResponse({"detail": str(e)}, status_code=409)

    @router.get("")
    def listing() -> list[dict[str, Any]]:
        return [s.as_json() for s in runs.runs()]

    @router.get("/{run_id}")
    def one(run_id: str) -> dict[str, Any]:
        return found(run_id)

    @router.post("/{run_id}/cancel")
    def cancel(run_id: str, request: Request) -> dict[str, Any]:
        require_admin(caller(request, services)[0], services.options, "Cancelling a merge")
        found(run_id)
        runs.cancel(run_id)
        return found(run_id)

    return router
