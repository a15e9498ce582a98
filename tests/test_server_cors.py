"""CORS on a real server: only allowed origins get CORS answers (Gradio's own reflection of any
`http://localhost:*` Origin is dropped), and with logins the preflights of --cors-allow-origins origins
are answered without one, so those origins can call the API (issue 22 items 17 and 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_server_harness import running_server

ALLOWED = "http://app.example:3000"
EVIL = "http://localhost:9999"

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _cors(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(headers).items() if k.lower().startswith("access-control-")}  # type: ignore[call-overload]


def test_gradio_routes_do_not_reflect_a_foreign_localhost_origin(tiny_data_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as ui:
        gr.Textbox()
    with running_server(tiny_data_dir, tmp_path, flags=["--api"], ui=ui) as srv, srv.client() as c:
        r = c.get("/config", headers={"Origin": EVIL})
        assert r.status_code == 200 and "components" in r.json()
        assert _cors(r.headers) == {}, r.headers
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        r = c.options("/gradio_api/queue/join", headers=preflight)
        assert "access-control-allow-origin" not in _cors(r.headers), r.headers
        assert "access-control-allow-credentials" not in _cors(r.headers)
        # the server's own page is unaffected
        own = c.get("/config", headers={"Origin": srv.url})
        assert own.status_code == 200


def test_allowed_origins_preflight_without_a_login_then_call_with_one(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    flags = ["--api", "--api-auth", "alice:pw", "--cors-allow-origins", ALLOWED]
    with running_server(tiny_data_dir, tmp_path, flags=flags, auth_delay=0) as srv, srv.client() as c:
        ask = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        r = c.options("/sdapi/v1/options", headers={"Origin": ALLOWED, **ask})
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        # another origin's preflight is no way in, and an allowed origin still needs the login itself
        assert c.options("/sdapi/v1/options", headers={"Origin": EVIL, **ask}).status_code == 401
        assert c.get("/sdapi/v1/options", headers={"Origin": ALLOWED}).status_code == 401
        assert (
            c.options("/sdapi/v1/options", headers={"Origin": ALLOWED}).status_code == 401
        )  # not a preflight
        r = c.get("/sdapi/v1/options", headers={"Origin": ALLOWED}, auth=("alice", "pw"))
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
