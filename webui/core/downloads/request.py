"""DownloadRequest: what a download job is asked to fetch, validated once where it is built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from webui.core.types import RequestError

# kind -> label shown to people; the keys are what requests and the API say
KINDS: dict[str, str] = {
    "checkpoint": "Checkpoint",
    "lora": "LoRA",
    "vae": "VAE",
    "embedding": "Embedding",
    "controlnet": "ControlNet",
    "upscaler": "Upscaler",
    "text_encoder": "Text encoder",
}
SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_URL_CHARS = 4096
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_BAD_NAME = re.compile(r"[\\/:*?\"<>|\x00-\x1f]")
# query parameters that carry credentials: kept out of the stored request (and so out of job listings)
_SECRET_PARAMS = ("token", "api_key", "apikey", "access_token")


def check_filename(name: str, field: str = "filename") -> str:
    """`name` when it is a plain model file name (no folders, a model suffix), else RequestError."""
    if _BAD_NAME.search(name) or name in (".", "..") or name.startswith(".") or len(name) > 200:
        raise RequestError(field, f"{name!r} is not a plain file name (no folders or special characters)")
    if not name.lower().endswith(SUFFIXES):
        raise RequestError(field, f"{name!r} must end with one of {', '.join(SUFFIXES)}")
    return name


def check_url(url: str, field: str = "url") -> None:
    """RequestError unless `url` is an http(s) URL with a host, no user name or password in it and no
    credential in its query (tokens are stored in the settings, never in a request)."""
    if not isinstance(url, str) or not url.strip():
        raise RequestError(
            field, "give the URL of a model file (Hugging Face, Civitai or another https link)"
        )
    if len(url) > MAX_URL_CHARS or any(ord(c) < 33 for c in url):
        raise RequestError(field, "is not a URL (too long, or it holds spaces or control characters)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RequestError(field, f"must start with https:// (or http://), not {parts.scheme or url!r}")
    if not parts.hostname:
        raise RequestError(field, f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise RequestError(field, "must not hold a user name or password: store tokens in the settings")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as e:
        raise RequestError(field, f"bad port: {e}") from e
    secret = [k for k, _ in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    if secret:
        raise RequestError(
            field,
            f"holds a credential ({secret[0]}=...): store the Civitai API key or Hugging Face token in the "
            "download settings instead (they are sent for you and never shown)",
        )


@dataclass(frozen=True)
class DownloadRequest:
    """A model file to fetch. `sha256`: the expected digest ("" = the one the source publishes, if it
    does); `kind`: one of KINDS ("" = read from the file's header); `filename`: the name to save as ("" =
    the server's or the URL's)."""

    url: str = ""
    sha256: str = ""
    kind: str = ""
    filename: str = ""

    def validate(self, samplers: Any = None) -> None:
        """RequestError naming the first bad field (the host policy is checked by the runner: it needs
        the server's allow-list)."""
        check_url(self.url)
        if self.sha256 and not _SHA256.match(self.sha256):
            raise RequestError("sha256", "must be 64 hexadecimal digits (a SHA-256), or left empty")
        if self.kind and self.kind not in KINDS:
            raise RequestError("kind", f"must be one of {', '.join(KINDS)}, or empty to detect it")
        if self.filename:
            check_filename(self.filename)
