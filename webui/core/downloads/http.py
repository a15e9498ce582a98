"""One HTTP GET through the host policy: each hop's host allowed and resolved once, the connection made
to the checked address, redirects followed by hand (each one checked again), credentials sent only to
the hosts they belong to."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import urljoin, urlsplit

from webui.core.downloads.policy import HostPolicy
from webui.core.types import RequestError

MAX_REDIRECTS = 8
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "Sfumato-downloader/1"
AuthFn = Callable[[str], Mapping[str, str]]  # host -> headers to send it (tokens)


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address, with the name kept for the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; the certificate is checked against the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Opened:
    """A response being read; `first` holds the headers of the first hop (Hugging Face puts the file's
    sha256 on its redirect), `url` the URL that answered."""

    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    url: str
    first: Message
    hops: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.connection.close()


def _connect(url: str, policy: HostPolicy, timeout: float, field: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(field, f"the download was sent to {url!r}, which is not an http(s) URL: refused")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = policy.addresses(parts.hostname, port, field)
    last: OSError | None = None
    for address in addresses:
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPS(
                parts.hostname, port, address, timeout, ssl.create_default_context()
            )
        else:
            conn = _PinnedHTTP(parts.hostname, port, address, timeout)
        try:
            conn.connect()
            return conn
        except OSError as e:
            conn.close()
            last = e
    raise ConnectionError(f"cannot connect to {parts.hostname}: {last}")


def open_url(
    url: str,
    policy: HostPolicy,
    *,
    headers: Mapping[str, str] | None = None,
    auth: AuthFn | None = None,
    timeout: float = 30.0,
    field: str = "url",
) -> Opened:
    """GET `url` (following redirects within the policy); the response of the last hop, whatever its
    status. RequestError naming `field` for a host or redirect the policy refuses; OSError (and
    http.client's errors) for network trouble."""
    first: Message | None = None
    hops: list[str] = []
    for _ in range(MAX_REDIRECTS + 1):
        try:
            conn = _connect(url, policy, timeout, field)
        except RequestError as e:
            if not hops:
                raise
            raise RequestError(
                field, f"{urlsplit(hops[-1]).hostname} redirected to {url}: {e.message}"
            ) from e
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        if auth is not None:
            sent.update(auth(parts.hostname or ""))
        try:
            conn.request("GET", target, headers=sent)
            response = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if first is None:
            first = response.msg
        location = response.getheader("Location")
        if response.status in REDIRECTS and location:
            conn.close()
            hops.append(url)
            url = urljoin(url, location)
            continue
        return Opened(response, conn, url, first, hops)
    raise RequestError(field, f"more than {MAX_REDIRECTS} redirects: refused")


def read_json_bytes(opened: Opened, limit: int = 4 << 20) -> bytes:
    """The body of a small (API) response, at most `limit` bytes."""
    try:
        data = opened.response.read(limit + 1)
    finally:
        opened.close()
    if len(data) > limit:
        raise ValueError(f"the answer of {opened.url} is larger than {limit} bytes")
    return data
