"""Roles: who may change what the whole server shares, who may generate, who may only look.

- admin: server settings, extensions, styles.csv, model lists and merges, every user's jobs, accounts;
- user: generates; sees, cancels and skips their own jobs and images; keeps their own preferences;
- viewer: reads (models, samplers, settings, the UI) but generates nothing and changes nothing.

With a login, a user's role comes from the users file (--users-file) or, for users of --api-auth /
--gradio-auth / --gradio-auth-path, is "admin" when --admin names them and "user" otherwise. Without
any login the single local user is the admin (every browser, every script on this machine), though each
browser still sees only its own jobs. One check per kind of action, called by every route and UI
handler that does it; a refusal is a 403 naming the role needed and the one the user has.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request

from webui.api.auth import scope_user
from webui.api.services import ANONYMOUS, ServerOptions, Services

ADMIN, USER, VIEWER = "admin", "user", "viewer"
_RANK = {VIEWER: 0, USER: 1, ADMIN: 2}


def role_of(user: str, options: ServerOptions) -> str:
    """The user's role: "admin", "user" or "viewer" (an unknown user counts as a viewer)."""
    if not options.auth:
        return ADMIN
    if options.accounts is not None:
        return options.accounts.role(user) or VIEWER
    return ADMIN if user in options.admins else USER


def is_admin(user: str, options: ServerOptions) -> bool:
    """Whether `user` sees and manages every user's jobs: an admin of a server with logins (without a
    login each browser keeps to its own jobs)."""
    return options.auth and role_of(user, options) == ADMIN


def may_change_shared(user: str, options: ServerOptions) -> bool:
    return role_of(user, options) == ADMIN


def role_refusal(user: str, options: ServerOptions, needed: str, what: str) -> str | None:
    """Why `user` may not do `what`, which needs at least the role `needed` (a message to show them), or
    None when they may."""
    role = role_of(user, options)
    if _RANK[role] >= _RANK[needed]:
        return None
    if needed == ADMIN:
        return (
            f"{what} changes the server for every user: only an admin may do it "
            f"(user {user!r} has the role {role!r}; admins are named with --admin or in the users file)"
        )
    return f"{what} needs the role 'user' or 'admin': user {user!r} has the role {role!r} (read-only)"


def admin_refusal(user: str, options: ServerOptions, what: str) -> str | None:
    """Why `user` may not do `what` to state every user shares, or None when they may."""
    return role_refusal(user, options, ADMIN, what)


def generate_refusal(user: str, options: ServerOptions, what: str = "Generating images") -> str | None:
    """Why `user` may not make anything (a viewer), or None when they may."""
    return role_refusal(user, options, USER, what)


def require_role(user: str, options: ServerOptions, needed: str, what: str) -> None:
    """403 with the reason unless `user` has at least the role `needed`."""
    refusal = role_refusal(user, options, needed, what)
    if refusal is not None:
        raise HTTPException(403, refusal)


def require_admin(user: str, options: ServerOptions, what: str) -> None:
    """403 with the reason unless `user` may change shared state."""
    require_role(user, options, ADMIN, what)


def require_generate(user: str, options: ServerOptions, what: str = "Generating images") -> None:
    """403 for a viewer: they may look, not make."""
    require_role(user, options, USER, what)


def needs(services: Services, needed: str, what: str) -> Any:
    """A route dependency: 403 unless the caller has at least the role `needed`. Dependencies run before
    the body is read and validated, so a refused caller learns nothing about the route's fields."""

    async def check(request: Request) -> None:  # async: never waits for a thread of the shared pool
        require_role(scope_user(request.scope, ANONYMOUS), services.options, needed, what)

    return Depends(check)
