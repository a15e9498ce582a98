"""The Accounts tab (admins, servers with a login): users and roles, API keys.

Lists the accounts (name, role, where they come from) and every API key (id, owner, name, created,
last used); adds and removes users, changes a role or a password, makes a key (shown once, here) and
revokes one. The same changes as `/api/v1/users` and `/api/v1/keys` and `python -m webui.users`, through
the server's one Accounts. Shown only to admins (hidden on page load for others) and every handler
checks the role again, so a non-admin calling the events directly gets the refusal text.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from webui.api import users_file as uf
from webui.api.accounts import AccountError
from webui.api.passwords import PasswordError
from webui.ui.context import StudioContext, refusal, user_of

USER_HEADERS = ["User", "Role", "Source", "API keys"]
KEY_HEADERS = ["Key id", "User", "Name", "Created", "Last used"]


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


def user_rows(accounts: Any) -> list[list[Any]]:
    keys = accounts.api_keys()
    return [
        [u["name"], u["role"], u["source"], sum(1 for k in keys if k.user == u["name"])]
        for u in accounts.users()
    ]


def key_rows(accounts: Any) -> list[list[Any]]:
    return [[k.id, k.user, k.name, _when(k.created), _when(k.last_used)] for k in accounts.api_keys()]


def build_accounts_tab(ctx: StudioContext) -> dict[str, Any] | None:
    """The tab, when the server has accounts (a login); None without one."""
    accounts = ctx.services.options.accounts
    if accounts is None:
        return None
    f: dict[str, Any] = {}
    with gr.Tab("Accounts", id="accounts", elem_id="tab_accounts", visible=False) as f["_tab"]:
        f["_result"] = gr.Textbox(label="Result", interactive=False, elem_id="accounts_result", lines=1)
        f["_users"] = gr.Dataframe(headers=USER_HEADERS, interactive=False, elem_id="accounts_users")
        with gr.Row():
            f["name"] = gr.Textbox(label="User name", elem_id="accounts_name", min_width=160)
            f["role"] = gr.Dropdown(list(uf.ROLES), value="user", label="Role", elem_id="accounts_role")
            f["password"] = gr.Textbox(label="Password", type="password", elem_id="accounts_password")
        with gr.Row():
            f["_add"] = gr.Button("Add user", variant="primary", elem_id="accounts_add", min_width=120)
            f["_set_role"] = gr.Button("Change role", elem_id="accounts_set_role", min_width=120)
            f["_set_password"] = gr.Button("Set password", elem_id="accounts_set_password", min_width=120)
            f["_remove"] = gr.Button("Remove user", variant="stop", elem_id="accounts_remove", min_width=120)
        f["_keys"] = gr.Dataframe(headers=KEY_HEADERS, interactive=False, elem_id="accounts_keys")
        with gr.Row():
            f["key_name"] = gr.Textbox(
                label="New key's name (for the user above)", elem_id="accounts_key_name"
            )
            f["_key_add"] = gr.Button("Make API key", elem_id="accounts_key_add", min_width=120)
            f["key_id"] = gr.Textbox(label="Key id", elem_id="accounts_key_id")
            f["_key_revoke"] = gr.Button(
                "Revoke key", variant="stop", elem_id="accounts_key_revoke", min_width=120
            )
        f["_new_key"] = gr.Textbox(
            label="New API key (shown once: copy it now)", interactive=False, elem_id="accounts_new_key",
            visible=False,
        )  # fmt: skip
    _wire(ctx, f)
    return f


def _wire(ctx: StudioContext, f: dict[str, Any]) -> None:
    accounts = ctx.services.options.accounts
    tables = [f["_users"], f["_keys"]]

    def page(request: Any) -> list[Any]:
        admin = refusal(ctx.services, request, "Managing accounts") is None
        if not admin:
            return [gr.update(visible=False), [], []]
        return [gr.update(visible=True), user_rows(accounts), key_rows(accounts)]

    ctx.page_load.add(page, [f["_tab"], *tables])

    def act(request: Any, what: str, change: Any) -> list[Any]:
        refused = refusal(ctx.services, request, what)
        if refused is not None:
            return [f"Not done: {refused}", gr.skip(), gr.skip(), gr.update(value="", visible=False)]
        try:
            said, key = change()
        except (AccountError, uf.UsersFileError, PasswordError, OSError) as e:
            return [f"Not done: {e}", gr.skip(), gr.skip(), gr.update(value="", visible=False)]
        shown = gr.update(value=key, visible=True) if key else gr.update(value="", visible=False)
        return [said, user_rows(accounts), key_rows(accounts), shown]

    outputs = [f["_result"], *tables, f["_new_key"]]
    quiet: dict[str, Any] = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")

    def add(name: str, role: str, password: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            accounts.add_user((name or "").strip(), role, password or "")
            return f"Added {name.strip()} ({role}).", ""

        return act(request, "Adding a user", change)

    def set_role(name: str, role: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            name_ = (name or "").strip()
            if name_ == user_of(request) and role != "admin":
                raise AccountError("an admin cannot demote themselves (ask another admin)")
            accounts.set_role(name_, role)
            return f"{name_} is now {role}.", ""

        return act(request, "Changing a role", change)

    def set_password(name: str, password: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            accounts.set_password((name or "").strip(), password or "")
            return f"Password of {name.strip()} changed.", ""

        return act(request, "Setting a password", change)

    def remove(name: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            name_ = (name or "").strip()
            if name_ == user_of(request):
                raise AccountError("an admin cannot remove themselves (ask another admin)")
            if not accounts.exists(name_):
                raise AccountError(f"user {name_[:70]!r} not found")
            accounts.remove_user(name_)
            return f"Removed {name_} and their API keys.", ""

        return act(request, "Removing a user", change)

    def key_add(name: str, key_name: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            owner = (name or "").strip() or user_of(request)
            entry, token = accounts.create_key(owner, key_name or "")
            return f"Made key {entry.id} for {owner}: copy it below, it is not shown again.", token

        return act(request, "Making an API key", change)

    def key_revoke(key_id: str, request: gr.Request) -> list[Any]:
        def change() -> tuple[str, str]:
            accounts.revoke_key((key_id or "").strip())
            return f"Revoked key {key_id.strip()}.", ""

        return act(request, "Revoking an API key", change)

    f["_add"].click(add, [f["name"], f["role"], f["password"]], outputs, **quiet)
    f["_set_role"].click(set_role, [f["name"], f["role"]], outputs, **quiet)
    f["_set_password"].click(set_password, [f["name"], f["password"]], outputs, **quiet)
    f["_remove"].click(remove, [f["name"]], outputs, **quiet)
    f["_key_add"].click(key_add, [f["name"], f["key_name"]], outputs, **quiet)
    f["_key_revoke"].click(key_revoke, [f["key_id"]], outputs, **quiet)
