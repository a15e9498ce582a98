"""A download as a job: the runner the engine calls for a DownloadRequest (progress in bytes, cancel,
the host policy and tokens from the flags and settings, the model lists refreshed after)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from webui.core.config import AppConfig
from webui.core.downloads.fetch import DownloadCancelled, DownloadStopped, Progress, download
from webui.core.downloads.policy import HostPolicy, parse_hosts
from webui.core.downloads.request import DownloadRequest
from webui.core.downloads.sources import Tokens
from webui.core.models.hashes import HashCache
from webui.core.sampling.loop import CancelToken
from webui.core.types import GenerationResult, RequestError

log = logging.getLogger(__name__)
Settings = Callable[[str], Any]


def policy_of(config: AppConfig, settings: Settings | None) -> HostPolicy:
    """The allow-list now: the defaults, the `download_hosts` setting, and --download-hosts."""
    stored = settings("download_hosts") if settings is not None else ""
    return HostPolicy(setting_hosts=parse_hosts(stored or ""), flag_hosts=config.download_hosts)


def tokens_of(settings: Settings | None) -> Tokens:
    if settings is None:
        return Tokens()
    return Tokens(hf=str(settings("hf_token") or ""), civitai=str(settings("civitai_api_key") or ""))


def check_download(request: DownloadRequest, config: AppConfig, settings: Settings | None) -> None:
    """RequestError for a download refused before it starts: a bad field, a host off the list or on the
    local network (checked again, hop by hop, when it runs)."""
    from urllib.parse import urlsplit

    request.validate()
    parts = urlsplit(request.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    policy_of(config, settings).addresses(parts.hostname or "", port)


def _relative(path: os.PathLike[str], config: AppConfig) -> str:
    """The file's path from the data folder (models/Lora/x.safetensors); its name alone elsewhere."""
    try:
        return (
            os.path.relpath(path, config.data_dir)
            if str(path).startswith(str(config.data_dir))
            else str(path)
        )
    except ValueError:
        return os.path.basename(path)


def run_download(
    request: DownloadRequest,
    config: AppConfig,
    settings: Settings | None,
    *,
    progress: Callable[[Any], None] | None,
    cancel: CancelToken | None,
    refresh: Callable[[], object],
) -> GenerationResult:
    """Run one download for the engine: `progress` gets JobProgress (steps and batches in MiB, for
    clients that read only those, and the bytes); `cancel` interrupted by the user deletes what was
    fetched, interrupted for a shutdown keeps it to resume; `refresh()` rescans the model lists."""
    from webui.core.engine import JobProgress  # the engine imports this module

    tokens = tokens_of(settings)

    def report(p: Progress) -> None:
        if progress is not None:
            mib = 1 << 20
            eta = p.eta or 0.0
            progress(
                JobProgress(1, 1, p.done // mib, -(-p.total // mib), eta, None, p.done, p.total, p.speed)
            )

    def stop() -> str | None:
        if cancel is None or not cancel.interrupted:
            return None
        return "cancel" if cancel.keeps_partial else "stop"  # a shutdown keeps the part to resume

    try:
        got = download(
            request, config, policy_of(config, settings), tokens=tokens, progress=report, stop=stop
        )
    except (DownloadCancelled, DownloadStopped):
        return GenerationResult(request, (), "", interrupted=True)
    except RequestError as e:
        raise RequestError(e.field, tokens.redact(e.message)) from None
    if config.hashing:
        HashCache(config.cache_dir / "hashes.sqlite").record(got.path, got.sha256)
    refresh()
    folder = got.path.parent
    name = got.path.name
    title = f"{name} [{got.sha256[:10]}]"
    warnings: list[str] = []
    if not got.verified:
        warnings.append(f"{name}: the source publishes no sha256, so the file could not be verified")
    if got.existed:
        warnings.append(f"{name} was already in {folder.name}: nothing new was written")
    output = {
        "path": _relative(got.path, config),
        "title": title,
        "kind": got.kind,
        "sha256": got.sha256,
        "shorthash": got.sha256[:10],
        "bytes": got.size,
        "verified": got.verified,
    }
    log.info("downloaded %s (%s, %d bytes) into %s", name, got.kind, got.size, folder)
    return GenerationResult(request, (), title, warnings=tuple(warnings), output=output)
