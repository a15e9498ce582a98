"""A real server on a loopback port for the API tests (uvicorn in a thread), and the server's basics."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from webui.api.app import create_app
from webui.api.services import ServerOptions, Services
from webui.core.config import AppConfig
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.flags import parse_flags
from webui.server import bind_socket, build_options, build_services, make_server


@dataclass
class Running:
    url: str
    services: Services
    config: AppConfig

    def client(self, auth: tuple[str, str] | None = None, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth, timeout=timeout)


def server_config(data_dir: Path, tmp: Path) -> AppConfig:
    return AppConfig.for_data_dir(
        data_dir, outputs_dir=tmp / "outputs", settings_path=tmp / "config.json", listen=False, port=0
    )


@contextmanager
def running_server(
    data_dir: Path,
    tmp: Path,
    *,
    flags: list[str] | None = None,
    manager: ModelManager | None = None,
    ui: Any | None = None,
    ui_factory: Callable[[Services], Any] | None = None,
    preview_every: int = 1,
    **option_overrides: Any,
) -> Iterator[Running]:
    """Start the real app (job queue included) on 127.0.0.1:<free port>; stop it on exit. The UI is `ui`, or
    what `ui_factory(services)` builds (the studio needs the services first)."""
    ns = parse_flags(["--data-dir", str(data_dir), *(["--api"] if flags is None else flags)])
    options = build_options(ns, **option_overrides)
    config = server_config(data_dir, tmp)
    if ns.download_hosts:
        config = dataclasses.replace(config, download_hosts=ns.download_hosts)
    if ns.civitai_url:
        config = dataclasses.replace(config, civitai_url=ns.civitai_url)
    if manager is None:
        manager = ModelManager(config, Precision())
        manager.refresh()
    services = build_services(
        config, options, manager, db_path=tmp / "jobs" / "jobs.sqlite", preview_every=preview_every
    )
    app = create_app(services, ui_factory(services) if ui_factory is not None else ui)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(
        app,
        config,
        forwarded_allow_ips=options.forwarded_allow_ips,
        read_timeouts=(options.header_timeout, options.body_timeout),
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", services, config)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def tiny_titles(running: Running) -> Mapping[str, str]:
    """{file name: title} of the fixture checkpoints, as /sdapi/v1/sd-models lists them."""
    with running.client() as c:
        return {Path(m["filename"]).name: m["title"] for m in c.get("/sdapi/v1/sd-models").json()}


def make_manager(data_dir: Path, tmp: Path) -> ModelManager:
    """A model manager the module's servers share (its RAM cache keeps the tiny models loaded)."""
    m = ModelManager(server_config(data_dir, tmp), Precision())
    m.refresh()
    return m


# -- the server's own behaviour ---------------------------------------------------------------------------


def test_home_page_escapes_and_points_to_docs(tiny_data_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_data_dir, tmp_path, flags=[]) as srv, srv.client() as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "UI is off" in r.text and "href='/docs'" in r.text
        assert "<script" not in r.text
        assert c.get("/docs").status_code == 200
        assert c.get("/api/v1/health").json()["status"] == "ok"
        assert c.get("/sdapi/v1/samplers").status_code == 404  # --api not given: no /sdapi


def test_nowebui_implies_the_a1111_api() -> None:
    assert build_options(parse_flags(["--nowebui"])).sdapi
    assert build_options(parse_flags(["--api"])).sdapi
    assert not build_options(parse_flags([])).sdapi


def test_options_from_flags_union_of_users_and_origins(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("carol:pw3\ndave:pw:4\n", encoding="utf-8")
    ns = parse_flags(
        [
            "--api-auth", "alice:pw1", "--gradio-auth", "bob:pw2,erin:x",
            "--gradio-auth-path", str(path), "--cors-allow-origins", "https://a.example, http://b.example:8080",
        ]
    )  # fmt: skip
    opts = build_options(ns)
    assert dict(opts.users) == {"alice": "pw1", "bob": "pw2", "erin": "x", "carol": "pw3", "dave": "pw:4"}
    assert opts.cors_origins == ("https://a.example", "http://b.example:8080")
    assert opts.auth


def test_home_page_escapes_the_data_folder(tmp_path: Path) -> None:
    from webui.api.app import _home_page

    evil = tmp_path / "<script>alert(1)</script>"
    services = Services(AppConfig.for_data_dir(evil), None, None, None, None, ServerOptions())  # type: ignore[arg-type]
    page = _home_page(services)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_listen_without_auth_warns_loudly(tmp_path: Path) -> None:
    from webui.server import warnings_for

    loud = warnings_for(AppConfig.for_data_dir(tmp_path, listen=True), ServerOptions())
    assert loud and "WITHOUT a login" in loud[0]
    assert warnings_for(AppConfig.for_data_dir(tmp_path), ServerOptions()) == []
    assert warnings_for(AppConfig.for_data_dir(tmp_path, listen=True), ServerOptions(users={"a": "b"})) == []


def test_cmd_flags_redacts_secrets() -> None:
    ns = parse_flags(["--api-auth", "alice:s3cret", "--gradio-auth", "bob:pw", "--tls-keyfile", "/k.pem"])
    flags = build_options(ns).cmd_flags
    assert set(flags) == set(vars(ns))
    text = repr(flags)
    assert "s3cret" not in text and "bob:pw" not in text and "/k.pem" not in text
    assert flags["api_auth"] == "<redacted>" and flags["port"] == 7860 and flags["gradio_auth_path"] is None
