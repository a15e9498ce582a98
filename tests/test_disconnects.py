"""A browser that disconnects in the middle of an upload costs one log line, not a traceback."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import gradio as gr
import pytest

from tests.test_server_harness import running_server


def _half_upload(url: str, path: str) -> None:
    host, port = url.split("//")[1].split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n"
    )
    part = b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + b"x" * 1000
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head.encode() + part)
        time.sleep(0.3)  # the server is reading the body when the client goes


def test_an_upload_cut_short_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    with gr.Blocks() as ui:
        gr.Markdown("upload target")
    caplog.set_level(logging.INFO)
    with running_server(data, tmp_path, flags=[], ui=ui) as srv:
        _half_upload(srv.url, "/gradio_api/upload")
        deadline = time.monotonic() + 10
        while not any("went away" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no log line for the disconnect"
            time.sleep(0.05)
        with srv.client() as c:  # and the server goes on answering
            assert c.get("/api/v1/health").json()["status"] == "ok"
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1 and "POST /gradio_api/upload" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)
