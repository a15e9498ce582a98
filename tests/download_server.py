"""A real HTTP server on 127.0.0.1 for the download tests: a model file with ranges and validators, a
connection dropped mid-body, redirects, HTML pages, a Hugging Face-style published hash, a Civitai-style
API. Every request is recorded (path and Range header)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Served:
    """What the server holds and saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # path -> body
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header or "")
    drops: dict[str, int] = field(default_factory=dict)  # path -> connections to cut mid-body (then normal)
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds to wait between 64 KiB pieces
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> extra headers
    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # path -> (content type, body)
    no_ranges: set[str] = field(default_factory=set)
    claims: dict[str, int] = field(default_factory=dict)  # path -> a Content-Length to claim (then close)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ranges(self, path: str) -> list[str]:
        return [r for p, r in self.seen if p == path]


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            served.seen.append((path, self.headers.get("Range") or ""))
            extra = served.headers.get(path, {})
            if path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[path])
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in served.pages:
                ctype, body = served.pages[path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if path in served.claims:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(served.claims[path]))
                self.end_headers()
                self.close_connection = True
                return
            body = served.files.get(path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and path not in served.no_ranges and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("ETag", '"v1"')
            self.send_header("Accept-Ranges", "bytes")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            part = body[start:]
            if served.drops.get(path, 0) > 0:
                served.drops[path] -= 1
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            pause = served.slow.get(path, 0.0)
            step = 64 << 10 if pause else len(part) or 1
            try:
                for i in range(0, len(part), step):
                    self.wfile.write(part[i : i + step])
                    if pause:
                        self.wfile.flush()
                        time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


@contextmanager
def serving(served: Served | None = None) -> Iterator[Served]:
    served = served or Served()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    server.daemon_threads = True
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="download-test-server", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def json_page(data: Any) -> tuple[str, bytes]:
    return ("application/json", json.dumps(data).encode())
