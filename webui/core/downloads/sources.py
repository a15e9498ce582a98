"""What the sources publish about a file, and the credentials each one takes.

- Hugging Face (`/<repo>/resolve/<rev>/<file>`): a large (LFS) file's sha256 is in the `X-Linked-Etag`
  header of the resolve answer (the redirect to the CDN), its size in `X-Linked-Size`; for such files
  the plain `ETag` on huggingface.co is the sha256 too. Gated repos need the user's token
  (`Authorization: Bearer hf_...`), sent to huggingface.co only (the CDN link is signed).
- Civitai: a version's files, with `hashes.SHA256`, from `GET /api/v1/model-versions/<id>`; a model page
  without `?modelVersionId=` means its newest version (`GET /api/v1/models/<id>`, `modelVersions[0]`).
  The API key goes as `Authorization: Bearer <key>` to civitai.com only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from webui.core.types import RequestError

HF_HOSTS = ("huggingface.co", "hf.co")
CIVITAI_HOSTS = ("civitai.com", "civitai.red")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FetchJson = Callable[[str], Any]  # url -> parsed JSON


def _on(host: str, hosts: tuple[str, ...]) -> bool:
    host = host.lower()
    return any(host == h or host.endswith("." + h) for h in hosts)


@dataclass(frozen=True)
class Tokens:
    """Credentials kept server-side (settings `hf_token`, `civitai_api_key`); never shown or logged."""

    hf: str = ""
    civitai: str = ""

    def headers_for(self, host: str) -> dict[str, str]:
        """The Authorization header `host` gets: the HF token for huggingface.co itself, the Civitai key
        for civitai.com itself (not their CDNs or any other host)."""
        host = host.lower()
        if self.hf and host in ("huggingface.co", "www.huggingface.co"):
            return {"Authorization": f"Bearer {self.hf}"}
        if self.civitai and host in ("civitai.com", "www.civitai.com", "civitai.red"):
            return {"Authorization": f"Bearer {self.civitai}"}
        return {}

    def redact(self, text: str) -> str:
        for secret in (self.hf, self.civitai):
            if secret:
                text = text.replace(secret, "********")
        return text


def _digest(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _HEX64.match(value) else ""


def published_sha256(url: str, headers: Message) -> str:
    """The sha256 a Hugging Face-style answer publishes: `X-Linked-Etag` (any host that sends it speaks
    Hugging Face's protocol, mirrors included), or the `ETag` of huggingface.co itself; "" when none."""
    linked = _digest(headers.get("X-Linked-Etag"))
    if linked:
        return linked
    host = urlsplit(url).hostname or ""
    return _digest(headers.get("ETag")) if _on(host, HF_HOSTS) else ""


@dataclass(frozen=True)
class Source:
    """Where to fetch from and what is known beforehand (sha256 "" and size 0 when not published)."""

    url: str
    sha256: str = ""
    filename: str = ""
    size: int = 0


_CIVITAI_DOWNLOAD = re.compile(r"^/api/download/models/(\d+)/?$")
_CIVITAI_MODEL = re.compile(r"^/models/(\d+)(?:/[^/]*)?/?$")


def civitai_version(url: str, hosts: tuple[str, ...] = CIVITAI_HOSTS) -> tuple[str, str] | None:
    """(kind, id) for a Civitai link: ("version", id) for a download link or a model page with
    `?modelVersionId=`, ("model", id) for a bare model page; None for any other URL."""
    parts = urlsplit(url)
    if not _on(parts.hostname or "", hosts):
        return None
    m = _CIVITAI_DOWNLOAD.match(parts.path)
    if m:
        return ("version", m.group(1))
    m = _CIVITAI_MODEL.match(parts.path)
    if m:
        version = parse_qs(parts.query).get("modelVersionId", [""])[0]
        return ("version", version) if version.isdigit() else ("model", m.group(1))
    return None


def _primary_file(files: Any, version: str) -> Mapping[str, Any]:
    if not isinstance(files, list) or not files:
        raise RequestError("url", f"Civitai lists no files for model version {version}")
    dicts = [f for f in files if isinstance(f, dict)]
    for f in dicts:
        if f.get("primary"):
            return f
    models = [f for f in dicts if f.get("type") == "Model"]
    return (models or dicts)[0]


def resolve_source(url: str, fetch_json: FetchJson, civitai_hosts: tuple[str, ...] = CIVITAI_HOSTS) -> Source:
    """The Source for a request URL: Civitai links are looked up in Civitai's API (file, sha256, size);
    any other URL is fetched as it is (its hash, if any, comes with the answer's headers)."""
    found = civitai_version(url, civitai_hosts)
    if found is None:
        return Source(url)
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    kind, ident = found
    try:
        if kind == "model":
            model = fetch_json(f"{base}/api/v1/models/{ident}")
            versions = model.get("modelVersions") if isinstance(model, dict) else None
            if not isinstance(versions, list) or not versions or not isinstance(versions[0], dict):
                raise RequestError("url", f"Civitai model {ident} has no versions to download")
            ident = str(versions[0].get("id", ""))
        version = fetch_json(f"{base}/api/v1/model-versions/{ident}")
    except (ValueError, KeyError) as e:
        raise RequestError("url", f"Civitai's API did not answer as expected: {e}") from e
    if not isinstance(version, dict):
        raise RequestError("url", f"Civitai's API did not describe model version {ident}")
    file = _primary_file(version.get("files"), ident)
    hashes = file.get("hashes")
    hashes = hashes if isinstance(hashes, dict) else {}
    sha = str(hashes.get("SHA256", "")).lower()
    size_kb = file.get("sizeKB")
    download = str(
        file.get("downloadUrl") or version.get("downloadUrl") or f"{base}/api/download/models/{ident}"
    )
    return Source(
        url=download,
        sha256=sha if _HEX64.match(sha) else "",
        filename=str(file.get("name") or ""),
        size=int(float(size_kb) * 1024) if isinstance(size_kb, (int, float)) else 0,
    )


def json_of(data: bytes, url: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{urlsplit(url).hostname} answered with something that is not JSON") from e
