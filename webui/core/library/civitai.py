"""Civitai's answer about a file, found by its sha256: names, description, trigger words, base model and
example pictures. Called only when the user clicks "Fetch info" (never by a scan).

`GET <base>/api/v1/model-versions/by-hash/<sha256>` answers a model version (404 when Civitai does not
know the file). `<base>` is https://civitai.com unless `--civitai-url` says otherwise (a mirror, or a
test's 127.0.0.1 server). Every request, the picture's included, goes through the download host policy
(webui.core.downloads.policy: the allow-list, no private addresses unless --download-hosts names them),
and the Civitai API key (setting `civitai_api_key`) is sent to civitai.com only.
"""

from __future__ import annotations

import html
import http.client
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from webui.core.downloads.http import open_url, read_json_bytes
from webui.core.downloads.policy import HostPolicy
from webui.core.downloads.sources import Tokens, json_of
from webui.core.library.cards import normal_base
from webui.core.types import RequestError

DEFAULT_URL = "https://civitai.com"
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGE_PIXELS = 64 * 2**20
A1111_BASES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}
_TAGS = re.compile(r"<[^>]*>")
_BREAKS = re.compile(r"<\s*(br|/p|/li|/h\d)\s*/?>", re.IGNORECASE)


class CivitaiError(Exception):
    """Civitai could not be asked, or answered something unexpected (the message says which)."""


class NotOnCivitai(CivitaiError):
    """Civitai does not know a file with this hash."""


@dataclass(frozen=True)
class CivitaiInfo:
    model_id: int | None
    version_id: int | None
    model_name: str
    version_name: str
    description: str  # plain text (Civitai sends HTML)
    trained_words: tuple[str, ...]
    base_model: str  # Civitai's own words ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D")
    image_urls: tuple[str, ...]  # still pictures only, Civitai's order

    def page_url(self, base_url: str) -> str:
        if self.model_id is None:
            return ""
        url = f"{base_url.rstrip('/')}/models/{self.model_id}"
        return f"{url}?modelVersionId={self.version_id}" if self.version_id is not None else url


def plain_text(markup: str) -> str:
    """Civitai's HTML description as text: line breaks kept, tags dropped, entities decoded."""
    text = _TAGS.sub("", _BREAKS.sub("\n", markup))
    lines = [" ".join(line.split()) for line in html.unescape(text).splitlines()]
    return "\n".join(line for line in lines if line).strip()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_version(data: Any) -> CivitaiInfo:
    """A CivitaiInfo from a model-version answer; CivitaiError when it is not one."""
    if not isinstance(data, dict) or "id" not in data:
        raise CivitaiError("Civitai's answer is not a model version")
    found = data.get("model")
    model: dict[str, Any] = found if isinstance(found, dict) else {}
    words = data.get("trainedWords")
    images = data.get("images")
    urls = tuple(
        str(i["url"])
        for i in (images if isinstance(images, list) else [])
        if isinstance(i, dict) and isinstance(i.get("url"), str) and i.get("type", "image") == "image"
    )
    return CivitaiInfo(
        model_id=_int(data.get("modelId")),
        version_id=_int(data.get("id")),
        model_name=str(model.get("name") or ""),
        version_name=str(data.get("name") or ""),
        description=plain_text(str(data.get("description") or model.get("description") or "")),
        trained_words=tuple(
            str(w).strip() for w in (words if isinstance(words, list) else []) if str(w).strip()
        ),
        base_model=str(data.get("baseModel") or ""),
        image_urls=urls,
    )


def lookup(
    sha256: str, base_url: str, policy: HostPolicy, tokens: Tokens, timeout: float = 30.0
) -> CivitaiInfo:
    """What Civitai knows of the file with this sha256. NotOnCivitai for a 404; CivitaiError for any
    other failure; RequestError (field "civitai_url") when the policy refuses the host."""
    url = f"{base_url.rstrip('/')}/api/v1/model-versions/by-hash/{quote(sha256.lower())}"
    try:
        opened = open_url(url, policy, auth=tokens.headers_for, timeout=timeout, field="civitai_url")
        status = opened.response.status
        body = read_json_bytes(opened)
    except RequestError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise CivitaiError(f"Civitai could not be reached: {tokens.redact(str(e))}") from e
    if status == 404:
        raise NotOnCivitai(f"Civitai knows no file with the hash {sha256[:10]}")
    if status != 200:
        raise CivitaiError(f"Civitai answered HTTP {status}")
    try:
        return parse_version(json_of(body, url))
    except ValueError as e:
        raise CivitaiError(str(e)) from e


def fetch_picture(url: str, policy: HostPolicy, tokens: Tokens, timeout: float = 30.0) -> bytes:
    """A picture from `url` re-encoded as PNG (so only a real image is ever written); CivitaiError when
    it cannot be fetched or is not a picture, RequestError when the policy refuses the host."""
    from PIL import Image

    try:
        opened = open_url(url, policy, auth=tokens.headers_for, timeout=timeout, field="image")
        try:
            status = opened.response.status
            data = opened.response.read(MAX_IMAGE_BYTES + 1)
        finally:
            opened.close()
    except (OSError, http.client.HTTPException) as e:
        raise CivitaiError(f"the preview could not be fetched: {e}") from e
    if status != 200:
        raise CivitaiError(f"the preview's server answered HTTP {status}")
    if len(data) > MAX_IMAGE_BYTES:
        raise CivitaiError(f"the preview is larger than {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise CivitaiError("the preview has too many pixels")
            im.seek(0)
            picture = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    except CivitaiError:
        raise
    except Exception as e:
        raise CivitaiError("the preview is not a picture") from e
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def sidecar_values(info: CivitaiInfo, current: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """The sidecar keys Civitai's answer fills: only those the user left empty (their words win)."""
    base = normal_base(info.base_model)
    found: dict[str, Any] = {
        "description": info.description,
        "activation text": ", ".join(info.trained_words),
        "sd version": A1111_BASES.get(base or "", ""),
        "notes": info.page_url(base_url),
    }
    return {k: v for k, v in found.items() if v and not current.get(k)}
