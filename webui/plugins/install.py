"""Installing and updating extensions with git, only when no one else can reach the server.

Installing an extension runs its code with the server's rights, so (as A1111) it is refused when the
server is reachable by others (--listen, a non-local --server-name, --share) unless the user started it
with --enable-insecure-extension-access. Git runs as a subprocess on the URL the user gave, never a
shell, with prompts off and the `ext::` transport (which runs commands) forbidden. A clone lands in a
hidden temporary folder and is renamed into `<data dir>/extensions/<name>` only once it has a valid
extension.toml, so a failed install leaves nothing behind.

A network URL (http(s)://, git://, ssh://, user@host:path) whose host resolves to a loopback, private,
link-local or otherwise non-public address is refused before git runs (no requests to internal
services through the server), with one message whatever is listening there; for http(s) git is then
pinned to the address that was checked (curl's resolve list) and follows no redirects, so neither a
second lookup nor a redirect can turn inward.
Local repositories (file://) stay allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from webui.core.config import AppConfig
from webui.plugins.manifest import MANIFEST_NAME, ManifestError, parse_manifest

LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_URL = re.compile(r"^(https?|git|ssh|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$")
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
GIT_TIMEOUT_S = 300


class InstallRefused(PermissionError):
    """Installing or updating is not allowed in this configuration; the message says how to allow it."""


class InstallError(RuntimeError):
    """git failed or the repository is not an extension; the message says which."""


def exposure(config: AppConfig, share: bool = False) -> list[str]:
    """Why others can reach this server (empty when it serves this machine only)."""
    reasons = []
    if config.listen:
        reasons.append("--listen")
    if config.server_name and config.server_name not in LOCAL_NAMES:
        reasons.append(f"--server-name {config.server_name}")
    if share:
        reasons.append("--share")
    return reasons


def check_access(config: AppConfig, *, share: bool = False, insecure_access: bool = False) -> None:
    reasons = exposure(config, share)
    if reasons and not insecure_access:
        raise InstallRefused(
            "installing or updating extensions is disabled because others can reach this server "
            f"({', '.join(reasons)}); restart with --enable-insecure-extension-access to allow it"
        )


def is_public(address: str) -> bool:
    """True for a globally routable address (not loopback, private, link-local, reserved, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_host(url: str) -> tuple[str, int | None, str] | None:
    """(host, port, scheme) of a network git URL; None for file:// (a local repository)."""
    scp = re.match(r"^[\w.-]+@([\w.-]+):", url)
    if scp and "://" not in url:
        return scp.group(1), 22, "ssh"
    parts = urlsplit(url)
    if parts.scheme in ("file", ""):  # a local repository
        return None
    try:
        port = parts.port
    except ValueError as e:
        raise InstallError(f"bad port in {url!r}") from e
    if not parts.hostname:
        raise InstallError(f"no host in {url!r}")
    return parts.hostname, port, parts.scheme


def checked_address(url: str) -> tuple[str, int, str] | None:
    """(host, port, address) the URL's host resolves to, all addresses public; InstallError otherwise.
    None for a local repository."""
    found = url_host(url)
    if found is None:
        return None
    host, port, scheme = found
    port = port or {"https": 443, "http": 80, "git": 9418, "ssh": 22}.get(scheme, 443)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise InstallError(f"cannot resolve the host {host!r} of {url}") from e
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise InstallError(
            f"refused: {host!r} is a local or private address (loopback, LAN, link-local); extensions "
            "are installed from public hosts or from a local folder (file://)"
        )
    return host, port, addresses[0]


def _git(args: list[str], cwd: Path | None = None, pin: tuple[str, int, str] | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "GIT_CONFIG_NOSYSTEM": "1"}
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "http.followRedirects=false"]
    if pin is not None:
        host, port, address = pin
        shown = f"[{address}]" if ":" in address else address
        cmd += ["-c", f"http.curloptResolve={host}:{port}:{shown}"]
    cmd += args
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except FileNotFoundError as e:
        raise InstallError("git is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"git {args[0]} took longer than {GIT_TIMEOUT_S} s") from e
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise InstallError(f"git {args[0]} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout.strip()


def folder_name_for(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else tail


def install_from_git(
    config: AppConfig,
    url: str,
    *,
    name: str | None = None,
    branch: str | None = None,
    share: bool = False,
    insecure_access: bool = False,
) -> Path:
    """Clone `url` into <data dir>/extensions/<name> and return the folder (applied on reload)."""
    check_access(config, share=share, insecure_access=insecure_access)
    url = url.strip()
    if not _URL.match(url) or url.startswith("-"):
        raise InstallError(
            f"not a git URL: {url!r} (expected https://, ssh://, git://, file:// or user@host:path)"
        )
    pin = checked_address(url)
    folder = name or folder_name_for(url)
    if not _FOLDER.match(folder):
        raise InstallError(f"cannot use {folder!r} as a folder name; give a name (letters, digits, _ . -)")
    if branch is not None and (branch.startswith("-") or not branch.strip()):
        raise InstallError(f"bad branch name {branch!r}")
    root = config.data_dir / "extensions"
    target = root / folder
    if target.exists():
        raise InstallError(f"{target} already exists; update it instead")
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=root, prefix=".install-"))
    try:
        _git(
            [
                "clone",
                "--depth",
                "1",
                *(["--branch", branch] if branch else []),
                "--",
                url,
                str(temp / "repo"),
            ],
            pin=pin,
        )
        try:
            parse_manifest(temp / "repo" / MANIFEST_NAME, "user", target)
        except ManifestError as e:
            raise InstallError(f"{url} is not a Sfumato extension: {e}") from e
        os.replace(temp / "repo", target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def update(config: AppConfig, folder: Path, *, share: bool = False, insecure_access: bool = False) -> str:
    """Fast-forward an installed extension to its remote; returns the new commit (applied on reload)."""
    check_access(config, share=share, insecure_access=insecure_access)
    root = (config.data_dir / "extensions").resolve()
    folder = folder.resolve()
    if folder.parent != root or not (folder / ".git").exists():
        raise InstallError(f"{folder} is not a git-installed extension under {root}")
    pin = checked_address(_git(["config", "--get", "remote.origin.url"], cwd=folder))
    _git(["pull", "--ff-only"], cwd=folder, pin=pin)
    return _git(["rev-parse", "HEAD"], cwd=folder)


def git_info(location: str | Path) -> dict[str, str]:
    """remote, branch, commit and date (unix seconds) of an extension folder cloned with git, else {}."""
    folder = Path(location)
    if not (folder / ".git").exists():
        return {}
    try:
        return {
            "remote": _git(["config", "--get", "remote.origin.url"], cwd=folder),
            "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd=folder),
            "commit": _git(["rev-parse", "HEAD"], cwd=folder),
            "date": _git(["log", "-1", "--format=%ct"], cwd=folder),
        }
    except InstallError:
        return {}
