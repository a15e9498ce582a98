"""Which hosts a download may contact: an allow-list, and no private addresses (no SSRF).

- Allowed by default: huggingface.co, hf.co (Hugging Face's file CDN) and civitai.com, each with its
  subdomains. The admin adds hosts with the `download_hosts` setting or `--download-hosts`.
- Every address a name resolves to must be public. Loopback, private, link-local, multicast, reserved
  and unspecified addresses are refused, unless the host was named with `--download-hosts` (the flag is
  set by whoever starts the server; that is how a LAN mirror, or a test's loopback server, is allowed).
- The connection goes to the address that was checked (no second look-up an attacker could answer
  differently), and each redirect is checked again the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from webui.core.types import RequestError

DEFAULT_HOSTS = ("huggingface.co", "hf.co", "civitai.com")
Resolver = Callable[[str, int], list[str]]


def parse_hosts(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Host names from "a.com, b.org" (or a list): lowercased, without ports, empty entries dropped."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        host = item.strip().lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host and host not in out:
            out.append(host)
    return tuple(out)


def check_host_entry(host: str) -> None:
    """ValueError unless `host` is a host name or an IP address (what the setting and the flag take)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.split(".")
    if not all(lab and len(lab) <= 63 and lab.replace("-", "").replace("_", "").isalnum() for lab in labels):
        raise ValueError(f"{host!r} is not a host name (such as example.com) or an IP address")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (socket.getaddrinfo)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _matches(host: str, entries: Iterable[str]) -> bool:
    try:
        ipaddress.ip_address(host)
        return host in entries  # an address is allowed only by itself
    except ValueError:
        return any(host == e or host.endswith("." + e) for e in entries)


@dataclass(frozen=True)
class HostPolicy:
    """`setting_hosts` (the admin's setting) and `flag_hosts` (--download-hosts) extend DEFAULT_HOSTS;
    only `flag_hosts` may resolve to private addresses."""

    setting_hosts: tuple[str, ...] = ()
    flag_hosts: tuple[str, ...] = ()
    resolver: Resolver = system_resolver

    @property
    def allowed(self) -> tuple[str, ...]:
        return (*DEFAULT_HOSTS, *self.setting_hosts, *self.flag_hosts)

    def addresses(self, host: str, port: int, field: str = "url") -> list[str]:
        """The addresses to connect to for `host`, or RequestError naming `field` when the host is not
        allowed, does not resolve, or resolves to an address that is not public (unless the flag named it)."""
        host = host.lower().rstrip(".")
        if not _matches(host, self.allowed):
            raise RequestError(
                field,
                f"the host {host} is not on the download allow-list ({', '.join(self.allowed)}); an admin "
                "can add it with the download_hosts setting or --download-hosts",
            )
        try:
            found = self.resolver(host, port)
        except (OSError, UnicodeError) as e:
            raise RequestError(field, f"the host {host} cannot be found ({e})") from e
        if not found:
            raise RequestError(field, f"the host {host} cannot be found")
        if not _matches(host, self.flag_hosts):
            private = [a for a in found if not _public(a)]
            if private:
                raise RequestError(
                    field,
                    f"the host {host} resolves to a private or local address ({private[0]}): refused. Only "
                    "hosts named with --download-hosts may be on the local network",
                )
        return found
