"""DNS rebinding: a request naming a Host the server does not answer to is refused on every route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import Running, make_manager, running_server
from webui.api.hosts import HostCheckMiddleware, HostPolicy, HostSpecError, host_name, parse_allowed_hosts
from webui.flags import parse_flags
from webui.server import build_options

FAST = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}
GRADIO_ROUTES = [
    ("GET", "/"),
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("GET", "/gradio_api/startup-events"),
    ("POST", "/gradio_api/queue/join"),  # how the UI runs every event, extension install included
    ("POST", "/gradio_api/upload"),
    ("POST", "/gradio_api/cancel"),
]


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as ui:
        gr.Markdown("studio")
    tmp = tmp_path_factory.mktemp("hosts")
    with running_server(tiny_data_dir, tmp, ui=ui, manager=make_manager(tiny_data_dir, tmp)) as running:
        yield running


def _routes(srv: Running) -> list[tuple[str, str]]:
    with srv.client() as c:
        spec = c.get("/openapi.json").json()
    routes = [("GET", "/docs"), ("GET", "/openapi.json"), *GRADIO_ROUTES]
    for path, methods in spec["paths"].items():
        concrete = path.replace("{job_id}", "0" * 32).replace("{index}", "0")
        routes += [(m.upper(), concrete) for m in methods]
    return routes


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:7860", "localhost.evil.example", "127.0.0.1.nip.io"]
)
def test_a_foreign_host_is_refused_on_every_route(srv: Running, host: str) -> None:
    routes = _routes(srv)
    assert len(routes) > 40 and ("POST", "/sdapi/v1/txt2img") in routes and ("POST", "/api/v1/jobs") in routes
    before = srv.services.queue.list(limit=1000)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for method, path in routes:
            body = {"kind": "txt2img", "request": FAST} if path == "/api/v1/jobs" else FAST
            r = c.request(method, path, headers={"Host": host}, json=body if method == "POST" else None)
            assert r.status_code == 400, (method, path, r.status_code)
            detail = r.json()["detail"]
            assert "not allowed" in detail and "--allowed-hosts" in detail
    assert srv.services.queue.list(limit=1000) == before  # nothing was queued


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:{port}", "127.0.0.1:{port}", "[::1]:{port}", "localhost."]
)
def test_loopback_names_pass(srv: Running, host: str) -> None:
    port = srv.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for path in ("/api/v1/health", "/", "/config", "/sdapi/v1/samplers"):
            r = c.get(path, headers={"Host": host.format(port=port)})
            assert r.status_code == 200, (path, r.status_code)


def test_listen_accepts_ip_addresses_and_listed_names(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--api", "--listen", "--allowed-hosts", "studio.lan, proxy.example:443"]
    with running_server(tiny_data_dir, tmp_path, flags=flags) as srv, srv.client() as c:
        for host in ("192.168.1.7:7860", "10.0.0.2", "[fe80::1]:7860", "studio.lan:7860", "proxy.example"):
            assert c.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "lan:7860", "studio.lan.evil.example"):
            assert c.get("/api/v1/health", headers={"Host": host}).status_code == 400, host


def test_host_policy() -> None:
    local = HostPolicy()
    assert not local.allows("192.168.1.7") and not local.allows("0.0.0.0:7860")
    assert local.allows("127.0.0.2:80") and local.allows("app.localhost") and local.allows(None)
    named = HostPolicy(bind_host="studio.lan")
    assert named.allows("studio.lan:7860") and named.allows("10.1.2.3") and not named.allows("x.lan")
    assert HostPolicy(["*"]).allows("anything.example")
    assert not local.allows("") and not local.allows("[::1") and not local.allows("localhost:x")
    assert host_name("[::1]:7860") == "::1" and host_name("Example.COM.:80") == "example.com"


def test_flags_build_the_policy() -> None:
    opts = build_options(parse_flags(["--allowed-hosts", "a.example,B.example:8080"]))
    assert opts.allowed_hosts == {"a.example", "b.example"} and opts.bind_host == "127.0.0.1"
    assert build_options(parse_flags(["--listen"])).bind_host == "0.0.0.0"
    assert build_options(parse_flags(["--server-name", "studio.lan"])).bind_host == "studio.lan"
    for bad in ("http://a.example/", "a b", "a.example:port"):
        with pytest.raises(HostSpecError, match="--allowed-hosts"):
            parse_allowed_hosts(bad)


def test_websockets_with_a_foreign_host_are_closed() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("in")
        await socket.close()

    app = HostCheckMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]), policy=HostPolicy())
    with TestClient(app, base_url="http://localhost:7860") as client:
        with client.websocket_connect("/ws", headers={"Host": "localhost:7860"}) as s:
            assert s.receive_text() == "in"
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/ws", headers={"Host": "evil.example"}) as s,
        ):
            s.receive_text()


def test_the_share_links_host_is_allowed(tmp_path: Path) -> None:
    from webui.api.services import ServerOptions, Services
    from webui.core.config import AppConfig
    from webui.server import with_share_host

    services = Services(AppConfig.for_data_dir(tmp_path), None, None, None, None, ServerOptions())  # type: ignore[arg-type]
    shared = with_share_host(services, "https://0123abcd.gradio.live")
    assert shared.options.allowed_hosts == {"0123abcd.gradio.live"}
    policy = HostPolicy(shared.options.allowed_hosts, bind_host=shared.options.bind_host)
    assert policy.allows("0123abcd.gradio.live") and not policy.allows("other.gradio.live")
    assert not HostPolicy(services.options.allowed_hosts).allows("0123abcd.gradio.live")


def test_the_studios_events_extension_install_included_refuse_a_foreign_host(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    from webui.server import build_ui

    with running_server(tiny_data_dir, tmp_path, flags=[], ui_factory=build_ui) as srv, srv.client() as c:
        config = c.get("/config").json()
        ids = {b.get("props", {}).get("elem_id"): b["id"] for b in config["components"]}
        deps = config["dependencies"]
        install = next(i for i, d in enumerate(deps) if [ids["extensions_install"], "click"] in d["targets"])
        assert len(deps) > 20
        extensions = sorted(p.name for p in (srv.config.data_dir / "extensions").glob("*"))
        for index in [install, *range(len(deps))]:
            data = ["file:///nonexistent/ext.git", ""] if index == install else []
            body = {"fn_index": index, "data": data, "session_hash": "evil", "event_data": None}
            for path in ("/gradio_api/queue/join", f"/gradio_api/run/{index}"):
                r = c.post(path, json=body, headers={"Host": "evil.example"})
                assert r.status_code == 400 and "not allowed" in r.json()["detail"], (index, path, r.text)
        assert sorted(p.name for p in (srv.config.data_dir / "extensions").glob("*")) == extensions
