"""Who may change what the whole server shares: settings, extensions, styles.csv, model lists.

With a login (--api-auth / --gradio-auth / --gradio-auth-path), only the admins named by --admin may;
everybody else may read, generate and manage their own jobs. Without any login the single local user
is the admin (every browser, every script on this machine). One check, called by every such route and
UI handler.
"""

from __future__ import annotations

from fastapi import HTTPException

from webui.api.services import ServerOptions


def may_change_shared(user: str, options: ServerOptions) -> bool:
    return not options.auth or user in options.admins


def admin_refusal(user: str, options: ServerOptions, what: str) -> str | None:
    """Why `user` may not do `what` (a message to show them), or None when they may."""
    if may_change_shared(user, options):
        return None
    return (
        f"{what} changes the server for every user: only an admin may do it "
        f"(user {user!r} is not one; admins are named with --admin)"
    )


def require_admin(user: str, options: ServerOptions, what: str) -> None:
    """403 with the reason unless `user` may change shared state."""
    refusal = admin_refusal(user, options, what)
    if refusal is not None:
        raise HTTPException(403, refusal)
