"""Half-sent requests do not hold connections: headers must arrive within --header-timeout, and a body
may not pause longer than --body-timeout; the connection is closed (issue 22 item 15). Short times are
configured here; each socket waits at most 20 s for the close, so a server that never closes fails."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.test_server_harness import running_server
from webui.flags import parse_flags
from webui.server import build_options


def _closed(sock: socket.socket) -> bool:
    """True when the server closes the connection (within the socket's timeout) without answering."""
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_requests_are_closed(tiny_data_dir: Path, tmp_path: Path) -> None:
    with running_server(
        tiny_data_dir, tmp_path, flags=["--api"], header_timeout=0.5, body_timeout=0.5
    ) as srv:
        host, port = "127.0.0.1", int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection((host, port), timeout=20) as s:  # headers never finished
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _closed(s)
        with socket.create_connection((host, port), timeout=20) as s:  # a body that stops
            head = b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            s.sendall(head + b'Content-Length: 100\r\n\r\n{"kind":')
            assert _closed(s)
        with socket.create_connection((host, port), timeout=20) as s:  # headers dripped in: one deadline
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            closed = False
            for n in range(100):  # 100 x 0.2 s: far past the deadline if each piece reset it
                try:
                    s.sendall(f"X-Drip-{n}: 1\r\n".encode())
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
            s.settimeout(2)
            assert closed or _closed(s)
        # whole requests are served as before, also several on one kept-alive connection
        with socket.create_connection((host, port), timeout=20) as s:
            for _ in range(2):
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while not answer.endswith(b"}"):
                    piece = s.recv(4096)
                    assert piece, answer  # closed before the whole answer
                    answer += piece
                assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer, answer
                time.sleep(1)  # longer than both deadlines: an idle kept-alive connection is not cut


def test_timeouts_must_be_positive() -> None:
    from webui.api.auth import AuthSpecError

    assert build_options(parse_flags(["--header-timeout", "3"])).header_timeout == 3
    with pytest.raises(AuthSpecError, match="--body-timeout"):
        build_options(parse_flags(["--body-timeout", "0"]))
