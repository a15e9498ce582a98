"""The one server: services from an AppConfig and the flags, the FastAPI app, uvicorn on host:port.

`build_options(ns)` reads the network flags (auth users, CORS, which APIs), `build_services(config, ...)`
makes the engine, model manager, job queue and settings, and `serve(...)` runs uvicorn until stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from webui.api.accounts import KEYS_FILE, Accounts
from webui.api.app import create_app
from webui.api.auth import AUTH_ENV, AuthSpecError, users_from_flags
from webui.api.hosts import parse_allowed_hosts
from webui.api.read_timeouts import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, with_read_deadlines
from webui.api.services import ServerOptions, Services
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.manager import ModelManager
from webui.core.settings import SettingsStore

log = logging.getLogger("sfumato.server")

SECRET_FLAGS = frozenset({"api_auth", "gradio_auth", "gradio_auth_path", "tls_keyfile"})
REDACTED = "<redacted>"


def redacted_flags(ns: argparse.Namespace) -> dict[str, Any]:
    """Every flag's value, with secrets (passwords, key files) replaced by a marker when set."""
    out: dict[str, Any] = {}
    for key, value in sorted(vars(ns).items()):
        out[key] = REDACTED if key in SECRET_FLAGS and value else value
    return out


def build_options(ns: argparse.Namespace, **overrides: Any) -> ServerOptions:
    """ServerOptions from the flags; a malformed auth, admin or host spec raises an error naming the flag
    (AuthSpecError, HostSpecError)."""
    users = users_from_flags(
        getattr(ns, "api_auth", None),
        getattr(ns, "gradio_auth", None),
        getattr(ns, "gradio_auth_path", None),
        os.environ.get(AUTH_ENV),
    )
    origins = tuple(
        o.strip() for o in (getattr(ns, "cors_allow_origins", None) or "").split(",") if o.strip()
    )
    for flag in ("header_timeout", "body_timeout"):
        seconds = getattr(ns, flag, None)
        if seconds is not None and not seconds > 0:
            raise AuthSpecError(f"--{flag.replace('_', '-')}: must be more than 0 seconds, got {seconds}")
    listen, server_name = bool(getattr(ns, "listen", False)), getattr(ns, "server_name", None)
    users_file = getattr(ns, "users_file", None)
    users_file = Path(users_file).expanduser().resolve() if users_file else None
    accounts = build_accounts(ns, users, users_file)
    base: dict[str, Any] = dict(
        sdapi=bool(getattr(ns, "api", False) or getattr(ns, "nowebui", False)),
        users=users,
        admins=accounts.flag_admins if accounts is not None else frozenset(),
        users_file=users_file,
        accounts=accounts,
        cors_origins=origins,
        allowed_hosts=parse_allowed_hosts(getattr(ns, "allowed_hosts", None)),
        bind_host=server_name or ("0.0.0.0" if listen else "127.0.0.1"),
        forwarded_allow_ips=(getattr(ns, "forwarded_allow_ips", None) or "").strip() or None,
        header_timeout=float(getattr(ns, "header_timeout", DEFAULT_HEADER_TIMEOUT)),
        body_timeout=float(getattr(ns, "body_timeout", DEFAULT_BODY_TIMEOUT)),
        cmd_flags=redacted_flags(ns),
    )
    per_user = getattr(ns, "max_queued_per_user", None)
    if per_user is not None:
        base["max_queued_per_user"] = int(per_user)
    max_work = getattr(ns, "max_job_work", None)
    if max_work is not None:
        base["max_job_work"] = float(max_work)
    device_ids = getattr(ns, "device_ids", None)
    if device_ids is not None:
        base["device_ids"] = tuple(device_ids)
    base["cpu_workers"] = int(getattr(ns, "workers", 1) or 1)
    if getattr(ns, "ray", None) is not None or getattr(ns, "ray_local", None):
        from webui.core.jobs.ray_pool import RayOptions

        base["ray"] = RayOptions(
            address=ns.ray,
            local=int(ns.ray_local or 0),
            threads=int(getattr(ns, "ray_threads", None) or 0),
            insecure=bool(getattr(ns, "ray_insecure", False)),
        )
    base.update(overrides)
    return ServerOptions(**base)


def admins_from_flag(spec: str | None, users: Iterable[str]) -> frozenset[str]:
    """--admin USER[,USER]: each must be a configured user (without a login nobody is told apart)."""
    names = frozenset(n.strip() for n in (spec or "").split(",") if n.strip())
    known = set(users)
    if names and not known:
        raise AuthSpecError(
            "--admin: needs users (--users-file, --api-auth, --gradio-auth or --gradio-auth-path)"
        )
    unknown = sorted(names - known)
    if unknown:
        raise AuthSpecError(f"--admin: {', '.join(unknown)} is not a configured user")
    return names


def build_accounts(
    ns: argparse.Namespace, users: Mapping[str, str], users_file: Path | None
) -> Accounts | None:
    """The accounts of a server with a login (None without): the flags' users and the users file's,
    with API keys kept in the users file or, without one, in <cache>/api-keys.json."""
    from webui.api.users_file import UsersFileError

    if not users and users_file is None:
        admins_from_flag(getattr(ns, "admin", None), ())  # --admin alone is an error
        return None
    keys_file = None
    if users_file is None:
        try:
            keys_file = AppConfig.from_flags(ns).cache_dir / KEYS_FILE
        except AttributeError:  # a partial namespace (tests): keys kept in memory
            keys_file = None
    try:
        accounts = Accounts(users, (), users_file, keys_file)
    except UsersFileError as e:
        raise AuthSpecError(str(e) if str(e).startswith("--users-file") else f"--users-file: {e}") from e
    accounts.flag_admins = admins_from_flag(getattr(ns, "admin", None), accounts.names())
    if users_file is not None and not accounts.names():
        log.warning(
            "--users-file %s has no users yet: add one with python -m webui.users add NAME", users_file
        )
    return accounts


def jobs_db_path(config: AppConfig) -> Path:
    return config.data_dir / "jobs" / "jobs.sqlite"


def build_services(
    config: AppConfig,
    options: ServerOptions,
    manager: ModelManager | None = None,
    *,
    db_path: Path | None = None,
    max_queued: int = 200,
    preview_every: int | None = None,
    extensions: bool = True,
) -> Services:
    """Engine (with the extensions, unless `extensions` is off), model manager, job queue (not started:
    the app starts it) and settings. Each job is saved as the settings say when it runs; live previews
    follow the settings unless `preview_every` fixes their period (tests)."""
    from webui.core.extension_points import NO_HOOKS
    from webui.core.jobs import JobQueue
    from webui.plugins.host import PluginHost

    hooks = PluginHost.for_config(config) if extensions else NO_HOOKS
    if isinstance(hooks, PluginHost):
        for ext in hooks.extensions():
            if ext.error:
                log.warning("extension %s: %s (%s)", ext.name, ext.status, ext.error)
    settings = SettingsStore(config.settings_path)
    engine = Engine(config, manager, hooks, settings=settings.get)
    make_hooks = PluginHost.for_config if extensions else None
    pool = ray_pool(config, engine, options, settings.as_dict, make_hooks)
    workers = None if pool is not None else worker_engines(config, engine, hooks, options)
    db = db_path or jobs_db_path(config)
    if settings.problem:
        log.warning("settings: %s", settings.problem)
    if isinstance(hooks, PluginHost):
        hooks.attach_settings(settings.get)  # extension settings are stored with the others
    queue = JobQueue(
        engine,
        db,
        max_queued=max_queued,
        max_per_user=options.max_queued_per_user,
        preview_every=preview_every,
        max_job_work=options.max_job_work,
        settings=settings.get,
        workers=workers,
        remote_workers=pool.workers if pool is not None else (),
        on_close=pool.close if pool is not None else None,
        grow=pool.add if pool is not None else None,
        shrink=pool.remove if pool is not None else None,
    )
    return Services(config, engine, engine.manager, queue, settings, options)


def ray_pool(
    config: AppConfig,
    engine: Engine,
    options: ServerOptions,
    settings_of: Callable[[], Mapping[str, Any]] = dict,
    make_hooks: Callable[[AppConfig], Any] | None = None,
) -> Any:
    """The Ray workers of --ray / --ray-local (webui.core.jobs.ray_pool.RayPool), None without them;
    RaySetupError (a ValueError's sibling: the caller prints it) when the cluster cannot be had. Each
    actor loads the extensions (`make_hooks`) and runs each job with the settings it started with."""
    if options.ray is None or not options.ray.enabled:
        return None
    from webui.core.jobs.ray_pool import RayPool, ServerSide
    from webui.core.models.registry import find

    def sha_of(query: str) -> str | None:
        file = find(engine.manager.checkpoints(), query)
        return file.sha256 if file is not None else None

    pool = RayPool.open(config, options.ray, ServerSide(sha_of, settings_of, make_hooks))
    log.info("job workers: %s", ", ".join(w.name for w in pool.workers))
    return pool


def worker_engines(config: AppConfig, engine: Engine, hooks: Any, options: ServerOptions) -> list[Engine]:
    """One engine per job worker (--device-ids, --workers), each with its own model manager (device and
    cache); `engine`, the one that lists models and checks requests, is the first when its device fits.
    ValueError naming the flag for a device that does not exist."""
    from webui.core.devices import worker_precisions

    precisions = worker_precisions(config, options.device_ids, options.cpu_workers)
    engines: list[Engine] = []
    for precision in precisions:
        if not engines and precision == engine.manager.precision:
            engines.append(engine)
            continue
        manager = ModelManager(config, precision, load_lock=engine.manager.load_lock)  # one load at a time
        manager.refresh()
        engines.append(Engine(config, manager, hooks, settings=engine.settings))
    if len(engines) > 1:
        shown = (f"{e.manager.precision.device} ({e.manager.precision.vram})" for e in engines)
        log.info("job workers: %s", ", ".join(shown))
    return engines


def warnings_for(config: AppConfig, options: ServerOptions, share: bool = False) -> list[str]:
    """Loud start-up warnings: reachable from other machines (or the internet) without a login."""
    out = []
    if config.host not in ("127.0.0.1", "localhost", "::1") and not options.auth:
        out.append(
            f"WARNING: listening on {config.host} WITHOUT a login: anyone who can reach this machine can "
            "use the studio and its API. Set --api-auth / --gradio-auth user:password."
        )
    if share and not options.auth:
        out.append(
            "WARNING: --share opens a public Gradio link WITHOUT a login: anyone with the link can use the "
            "studio and its API. Set --gradio-auth user:password."
        )
    return out


def build_ui(services: Services) -> Any:
    """The Gradio studio for these services (webui.ui.studio.Studio)."""
    from webui.ui.studio import build_studio

    return build_studio(services)


def open_share_link(port: int, tunnel: Any = None) -> str | None:
    """Gradio's share tunnel to 127.0.0.1:port (network: only with --share). None if it cannot open."""
    import secrets

    if tunnel is None:
        from gradio.networking import setup_tunnel as tunnel
    try:
        return str(tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None))
    except Exception as e:  # no network, blocked, Gradio's server down: the local server still runs
        print(f"warning: --share: could not open a share link: {e}", flush=True)
        return None


def with_share_host(services: Services, link: str) -> Services:
    """The services with the share link's host name allowed (the tunnel forwards its Host header)."""
    from urllib.parse import urlsplit

    name = urlsplit(link).hostname
    if not name:
        return services
    options = dataclasses.replace(services.options, allowed_hosts=services.options.allowed_hosts | {name})
    return dataclasses.replace(services, options=options)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(
    app: Any,
    config: AppConfig,
    tls: Mapping[str, str | None] | None = None,
    *,
    forwarded_allow_ips: str | None = None,
    read_timeouts: tuple[float, float] = (DEFAULT_HEADER_TIMEOUT, DEFAULT_BODY_TIMEOUT),
    **kw: Any,
) -> Any:
    """A uvicorn.Server for the app on config.host/port (run it with .run(sockets=[...])).

    X-Forwarded-For/-Proto are honoured only from the `forwarded_allow_ips` proxies (uvicorn's own
    default trusts 127.0.0.1, which would let anything behind a local tunnel pick its client address).
    `read_timeouts`: (headers, body) deadlines in seconds for reading a request (webui.api.read_timeouts)."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    tls = tls or {}
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips or "",
        log_level=kw.pop("log_level", "warning"),
        ssl_keyfile=tls.get("keyfile"),
        ssl_certfile=tls.get("certfile"),
        timeout_graceful_shutdown=kw.pop("timeout_graceful_shutdown", 5),
        http=with_read_deadlines(AutoHTTPProtocol, *read_timeouts),
        **kw,
    )
    return uvicorn.Server(uv)


def serve(
    services: Services,
    ui: Any | None = None,
    *,
    tls: Mapping[str, str | None] | None = None,
    root_path: str = "",
    share: bool = False,
) -> None:
    """Build the app and run it until interrupted (Ctrl+C / SIGTERM)."""
    config = services.config
    for line in warnings_for(config, services.options, share):
        print(line, flush=True)
    sock = bind_socket(config.host, config.port)
    scheme = "https" if tls and tls.get("certfile") else "http"
    host, port = sock.getsockname()[:2]
    print(f"Running on {scheme}://{host}:{port}", flush=True)
    if share:
        link = open_share_link(port)
        if link:
            print(f"Public share link: {link}", flush=True)
            services = with_share_host(services, link)
    app = create_app(services, ui)
    server = make_server(
        app,
        config,
        tls,
        forwarded_allow_ips=services.options.forwarded_allow_ips,
        read_timeouts=(services.options.header_timeout, services.options.body_timeout),
        root_path=root_path,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
