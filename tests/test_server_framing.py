"""No other site may frame the studio or the login page (clickjacking), on a real server."""

from __future__ import annotations

from pathlib import Path

from tests.test_server_harness import running_server

PAGE = {"Accept": "text/html,application/xhtml+xml"}


def test_no_other_site_may_frame_the_studio_or_the_login_page(tiny_data_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    from webui.api.auth import LOGIN_PATH

    with gr.Blocks(analytics_enabled=False) as ui:
        gr.Textbox()
    flags = ["--api", "--gradio-auth", "ann:pw"]
    with running_server(tiny_data_dir, tmp_path, flags=flags, ui=ui) as srv, srv.client() as c:
        for r in (c.get(LOGIN_PATH), c.get("/", auth=("ann", "pw"), headers=PAGE), c.get("/", headers=PAGE)):
            assert r.headers["x-frame-options"] == "DENY", r.url
            assert r.headers["content-security-policy"] == "frame-ancestors 'none'", r.url
