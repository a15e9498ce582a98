"""`/api/v1/sessions`: the caller's own login sessions, listed and revoked (served only with a login)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from webui.api.auth import COOKIE_NAME, scope_user
from webui.api.sessions import SessionStore


def build_router(sessions: SessionStore) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["sessions"])

    @router.get("/sessions")
    async def list_sessions(request: Request) -> Any:
        user = scope_user(request.scope, "")
        current = sessions.id_of(request.cookies.get(COOKIE_NAME))
        return {
            "sessions": [
                {
                    "id": s.id,
                    "created": s.created,
                    "expires": s.expires,
                    "last_seen": s.last_seen,
                    "current": s.id == current,
                }
                for s in sessions.list(user)
            ]
        }

    @router.post("/sessions/{session_id}/revoke")
    async def revoke(session_id: str, request: Request) -> Any:
        user = scope_user(request.scope, "")
        if not sessions.revoke(user, session_id):
            raise HTTPException(404, f"session {session_id[:40]!r} not found")
        return {"revoked": session_id}

    return router
