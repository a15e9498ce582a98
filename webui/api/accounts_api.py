"""`/api/v1/me`, `/api/v1/keys` and `/api/v1/users` (served only with a login).

- `GET /me`: the caller's name and role.
- API keys for scripts (`Authorization: Bearer <key>`): `POST /keys {"name"}` makes one and shows the
  key once; `GET /keys` lists the caller's (an admin's lists everybody's); `DELETE /keys/{id}` revokes.
  Everybody manages their own keys, an admin anybody's (`"user"` in the POST body); somebody else's
  key id answers 404, like an unknown one.
- Accounts (admins only): `GET /users`, `POST /users {"name", "role", "password"}`,
  `PATCH /users/{name} {"role"?, "password"?}`, `DELETE /users/{name}` (their keys and sessions end
  with them). Users of the U:P flags are listed but changed only through the flags; an admin cannot
  remove or demote themselves (so the server always keeps one).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from webui.api import users_file as uf
from webui.api.accounts import AccountError, Accounts
from webui.api.auth import scope_user
from webui.api.passwords import PasswordError, check_new_password
from webui.api.roles import ADMIN, needs, require_admin, role_of
from webui.api.services import Services
from webui.core.types import RequestError


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    user: str | None = None  # an admin may make a key for another user


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str = "user"
    password: str


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str | None = None
    password: str | None = None


def key_json(key: uf.KeyEntry) -> dict[str, Any]:
    return {
        "id": key.id,
        "user": key.user,
        "name": key.name,
        "created": key.created,
        "last_used": key.last_used,
    }


def checked(field: str, check: Any, value: Any) -> None:
    """Run a value check; its error becomes a 422 naming `field`."""
    try:
        check(value)
    except (uf.UsersFileError, PasswordError) as e:
        raise RequestError(field, str(e).split(": ", 1)[-1]) from e


def build_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["accounts"])
    accounts: Accounts = services.options.accounts

    def who(request: Request) -> tuple[str, bool]:
        user = scope_user(request.scope, "")
        return user, role_of(user, services.options) == ADMIN

    @router.get("/me")
    async def me(request: Request) -> Any:
        user, _ = who(request)
        return {"user": user, "role": role_of(user, services.options)}

    @router.get("/keys")
    async def list_keys(request: Request) -> Any:
        user, admin = who(request)
        return {"keys": [key_json(k) for k in accounts.api_keys(None if admin else user)]}

    @router.post("/keys", status_code=201)
    async def create_key(body: NewKey, request: Request) -> Any:
        user, admin = who(request)
        owner = body.user or user
        if owner != user and not admin:
            require_admin(user, services.options, "Making an API key for another user")
        if not accounts.exists(owner):
            raise RequestError("user", f"no user {owner[:70]!r}")
        checked("name", uf.check_key_name, body.name)
        try:
            entry, token = await run_in_threadpool(accounts.create_key, owner, body.name)
        except uf.UsersFileError as e:
            raise HTTPException(409, str(e)) from e
        return {**key_json(entry), "key": token, "note": "shown once: store it now"}

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> Any:
        user, admin = who(request)
        entry = accounts.key(key_id)
        if entry is None or (entry.user != user and not admin):
            raise HTTPException(404, f"key {key_id[:40]!r} not found")
        try:
            await run_in_threadpool(accounts.revoke_key, key_id)
        except uf.UsersFileError as e:  # revoked meanwhile
            raise HTTPException(404, str(e)) from e
        return {"revoked": key_id}

    def admin_only(request: Request, what: str) -> str:
        user = scope_user(request.scope, "")
        require_admin(user, services.options, what)
        return user

    @router.get("/users")
    async def list_users(request: Request) -> Any:
        admin_only(request, "Listing the accounts")
        return {"users": accounts.users(), "users_file": accounts.users_file is not None}

    @router.post("/users", status_code=201, dependencies=[needs(services, ADMIN, "Adding a user")])
    async def add_user(body: NewUser) -> Any:
        checked("name", uf.check_name, body.name)
        checked("role", uf.check_role, body.role)
        checked("password", check_new_password, body.password)
        if accounts.exists(body.name):
            raise HTTPException(409, f"user {body.name!r} already exists")
        try:
            await run_in_threadpool(accounts.add_user, body.name, body.role, body.password)
        except (AccountError, uf.UsersFileError) as e:
            raise HTTPException(409, str(e)) from e
        return {"name": body.name, "role": accounts.role(body.name)}

    @router.patch("/users/{name}", dependencies=[needs(services, ADMIN, "Changing a user")])
    async def change_user(name: str, body: UserChange, request: Request) -> Any:
        me_ = scope_user(request.scope, "")
        if not accounts.exists(name):
            raise HTTPException(404, f"user {name[:70]!r} not found")
        if body.role is not None:
            checked("role", uf.check_role, body.role)
            if name == me_ and body.role != ADMIN:
                raise HTTPException(409, "an admin cannot demote themselves (ask another admin)")
        if body.password is not None:
            checked("password", check_new_password, body.password)
        try:
            if body.role is not None:
                await run_in_threadpool(accounts.set_role, name, body.role)
            if body.password is not None:
                await run_in_threadpool(accounts.set_password, name, body.password)  # logged out everywhere
        except (AccountError, uf.UsersFileError) as e:
            raise HTTPException(409, str(e)) from e
        return {"name": name, "role": accounts.role(name)}

    @router.delete("/users/{name}")
    async def remove_user(name: str, request: Request) -> Any:
        me_ = admin_only(request, "Removing a user")
        if not accounts.exists(name):
            raise HTTPException(404, f"user {name[:70]!r} not found")
        if name == me_:
            raise HTTPException(409, "an admin cannot remove themselves (ask another admin)")
        try:
            await run_in_threadpool(accounts.remove_user, name)
        except (AccountError, uf.UsersFileError) as e:
            raise HTTPException(409, str(e)) from e
        return {"removed": name}

    return router
