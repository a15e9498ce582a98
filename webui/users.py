"""Manage a users file (`--users-file`): `python -m webui.users --file PATH COMMAND ...`.

    add NAME [--role admin|user|viewer]   a new account (password asked for, twice)
    passwd NAME                           set a new password
    set-role NAME ROLE                    change a role
    remove NAME                           remove an account and its API keys
    list                                  accounts and roles
    key-add NAME KEYNAME                  a new API key for NAME, printed once
    keys [NAME]                           API keys (id, user, name, created, last used)
    key-revoke ID                         revoke an API key

Passwords are never taken from the command line (the process list shows it): they are asked for on
the terminal, or read from standard input with --password-stdin (first line), or from the environment
variable named by --password-env. The file may also be given as SFUMATO_USERS_FILE. A running server
sees each change at once.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from webui.api import users_file as uf
from webui.api.passwords import PasswordError, check_new_password, hash_password

FILE_ENV = "SFUMATO_USERS_FILE"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webui.users",
        description="Manage a Sfumato users file (accounts with hashed passwords and roles, API keys).",
    )
    p.add_argument("--file", default=None, help=f"the users file (default: ${FILE_ENV})")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    src.add_argument(
        "--password-env", default=None, metavar="VAR", help="read the password from this variable"
    )
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add an account")
    add.add_argument("name")
    add.add_argument("--role", default="user", choices=uf.ROLES)
    sub.add_parser("passwd", help="set an account's password").add_argument("name")
    role = sub.add_parser("set-role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=uf.ROLES)
    sub.add_parser("remove", help="remove an account and its API keys").add_argument("name")
    sub.add_parser("list", help="list accounts")
    key = sub.add_parser("key-add", help="make an API key (printed once)")
    key.add_argument("name", help="the account the key logs in as")
    key.add_argument("key_name", help="what the key is for (shown in listings)")
    sub.add_parser("keys", help="list API keys").add_argument("name", nargs="?")
    sub.add_parser("key-revoke", help="revoke an API key").add_argument("id")
    return p


def read_password(ns: argparse.Namespace, confirm: bool = True) -> str:
    if ns.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif ns.password_env:
        password = os.environ.get(ns.password_env, "")
        if not password:
            raise PasswordError(f"password: the environment variable {ns.password_env} is empty or unset")
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise PasswordError("password: the two entries differ")
    check_new_password(password)
    return password


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


def run(ns: argparse.Namespace, out: object = sys.stdout) -> int:
    path_text = ns.file or os.environ.get(FILE_ENV)
    if not path_text:
        raise uf.UsersFileError(f"--file: which users file? (or set {FILE_ENV})")
    path = Path(path_text).expanduser()

    def say(text: str) -> None:
        print(text, file=out)  # type: ignore[call-overload]

    cmd = ns.command
    if cmd == "list":
        data = uf.read(path)
        for name, entry in sorted(data.users.items()):
            keys = sum(1 for k in data.keys.values() if k.user == name)
            say(f"{name}\t{entry.role}\tkeys: {keys}\tcreated {_when(entry.created)}")
        return 0
    if cmd == "keys":
        for k in sorted(uf.read(path).keys.values(), key=lambda k: (k.user, k.created)):
            if ns.name is None or k.user == ns.name:
                say(f"{k.id}\t{k.user}\t{k.name}\tcreated {_when(k.created)}\tlast used {_when(k.last_used)}")
        return 0
    if cmd == "add":
        uf.check_name(ns.name)
        if ns.name in uf.read(path).users:
            raise uf.UsersFileError(f"user {ns.name!r} already exists")
        hashed = hash_password(read_password(ns))
        uf.update(path, lambda d: uf.add_user(d, ns.name, ns.role, hashed))
        say(f"added {ns.name} ({ns.role}) to {path}")
    elif cmd == "passwd":
        if ns.name not in uf.read(path).users:
            raise uf.UsersFileError(f"user {ns.name!r} not found")
        hashed = hash_password(read_password(ns))
        uf.update(path, lambda d: uf.set_password(d, ns.name, hashed))
        say(f"password of {ns.name} changed (a running server ends their login sessions)")
    elif cmd == "set-role":
        uf.update(path, lambda d: uf.set_role(d, ns.name, ns.role))
        say(f"{ns.name} is now {ns.role}")
    elif cmd == "remove":
        uf.update(path, lambda d: uf.remove_user(d, ns.name))
        say(f"removed {ns.name} and their API keys")
    elif cmd == "key-add":
        made: list[str] = []

        def change(d: uf.UsersData) -> uf.UsersData:
            if ns.name not in d.users:
                raise uf.UsersFileError(f"user {ns.name!r} not found")
            data, entry, token = uf.add_key(d, ns.name, ns.key_name)
            made.append(token)
            return data

        uf.update(path, change)
        say(made[0])
        print(
            f"(API key of {ns.name}: shown once, store it now; use it as 'Authorization: Bearer <key>')",
            file=sys.stderr,
        )
    elif cmd == "key-revoke":
        uf.update(path, lambda d: uf.remove_key(d, ns.id))
        say(f"revoked key {ns.id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return run(ns)
    except (uf.UsersFileError, PasswordError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("error: no password given", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
