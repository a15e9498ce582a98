"""`/api/v1/workers`: the job workers, and (admins, with Ray workers) adding and removing them while jobs
run.

- `GET /api/v1/workers`: each worker's id, kind (`ray` or `local`), device, node and pid (Ray), state
  (`idle`, `running`, `draining`, `restarting`) and the job it runs (its id, for admins only).
- `POST /api/v1/workers` `{"count": N}` (admins): N more Ray workers, ready when the answer comes (201,
  their ids); 409 when the workers are the server's own devices or the cluster has no room for them.
- `DELETE /api/v1/workers/{id}` (admins): the worker finishes the job it runs, takes no other, and its
  actor is then stopped (202); 404 for an unknown id, 409 for the last worker or an in-process one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from webui.api.roles import ADMIN, VIEWER, is_admin, needs
from webui.api.sdapi import caller
from webui.api.services import Services
from webui.api.waiting import Waiting
from webui.core.jobs import QueueClosed, WorkersFixed

MAX_ADD = 64  # workers one request may add


class AddBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1, le=MAX_ADD)


def build_router(services: Services, waits: Waiting) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["workers"])
    queue = services.queue

    @router.get("/workers", dependencies=[needs(services, VIEWER, "Listing the job workers")])
    async def workers(request: Request) -> Any:
        user, _ = caller(request, services)
        states = queue.worker_states()
        if not is_admin(user, services.options) and services.options.auth:
            for entry in states:  # whose job runs where is the admins' business
                entry["job"] = None
        return {"workers": states}

    @router.post("/workers", status_code=201, dependencies=[needs(services, ADMIN, "Adding job workers")])
    async def add(body: AddBody) -> Any:
        from webui.core.jobs.ray_pool import RaySetupError

        try:
            ids = await waits.work(queue.add_workers, body.count)
        except (WorkersFixed, RaySetupError) as e:
            raise HTTPException(409, str(e)) from e
        except QueueClosed as e:
            raise HTTPException(503, str(e)) from e
        return {"added": list(ids), "workers": queue.worker_states()}

    @router.delete(
        "/workers/{worker_id}",
        status_code=202,
        dependencies=[needs(services, ADMIN, "Removing a job worker")],
    )
    async def remove(worker_id: str) -> Any:
        try:
            queue.remove_worker(worker_id)
        except KeyError:
            raise HTTPException(404, f"no job worker {worker_id!r}") from None
        except WorkersFixed as e:
            raise HTTPException(409, f"worker {worker_id!r} cannot be removed: {e}") from e
        return {"id": worker_id, "state": "draining"}

    return router
