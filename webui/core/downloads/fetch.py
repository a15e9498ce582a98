"""The transfer: a model file from a URL to its models folder, whole and verified, or nothing.

The bytes go to `models/.downloads/<key>.part` (with `<key>.json`: the URL, the server's validators and
the size), so a dropped connection, a restart or a worker that died resumes with an HTTP Range request
(`If-Range` makes a changed file start over). The sha256 is computed while writing and compared with
the one the request gives or the source publishes; the kind is read from the safetensors header as soon
as its bytes are in (and the target's name checked then, before gigabytes more); free disk space is
checked before any byte is written. Only a complete, verified file is renamed into its folder. A cancel,
a wrong hash or a refused file leaves nothing behind; a shutdown keeps the part for the next run.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from webui.core.config import AppConfig
from webui.core.downloads.files import (
    CHUNK,
    MAX_HEADER_BYTES,
    content_range,
    disposition_name,
    header_shapes,
    human_bytes,
    move_into_place,
    remove,
    staging_paths,
)
from webui.core.downloads.hashing import hashed_in_background
from webui.core.downloads.http import Opened, open_url, read_json_bytes
from webui.core.downloads.kinds import detect_kind, folder_for
from webui.core.downloads.policy import HostPolicy
from webui.core.downloads.request import SUFFIXES, DownloadRequest, check_filename
from webui.core.downloads.sources import (
    CIVITAI_HOSTS,
    Source,
    Tokens,
    json_of,
    published_sha256,
    resolve_source,
)
from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    CheckpointError,
    read_safetensors_header,
    sniff_format,
)
from webui.core.models.hashes import sha256_file
from webui.core.types import RequestError

RESERVE_BYTES = 256 << 20  # left free on the disk after a download
PROGRESS_EVERY = 0.25  # seconds between progress reports
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--")


class DownloadFailed(RuntimeError):
    """The transfer could not be completed (network trouble beyond the retries, a full disk)."""


class DownloadStopped(Exception):
    """Stopped for a shutdown or a lost lease: the part is kept and the job runs again."""


class DownloadCancelled(Exception):
    """Cancelled by the user: nothing was kept."""


@dataclass(frozen=True)
class Progress:
    done: int  # bytes on disk
    total: int  # 0: not known
    speed: float  # bytes per second, recent
    eta: float | None  # seconds left, when the total is known


@dataclass(frozen=True)
class Downloaded:
    path: Path
    kind: str
    sha256: str
    size: int
    verified: str  # what the sha256 was checked against: "request", "source", or "" (nothing published)
    existed: bool = False  # the same file was already there (nothing was moved)


Stop = Callable[[], str | None]  # None: go on; "cancel": the user cancelled; "stop": shutdown


class _Transfer:
    """One download's state across its attempts."""

    def __init__(
        self,
        request: DownloadRequest,
        config: AppConfig,
        policy: HostPolicy,
        tokens: Tokens,
        progress: Callable[[Progress], None],
        stop: Stop,
        retries: int,
        civitai_hosts: tuple[str, ...],
    ) -> None:
        self.request, self.config, self.policy, self.tokens = request, config, policy, tokens
        self.report, self.stop, self.retries = progress, stop, retries
        self.civitai_hosts = civitai_hosts
        self.part, self.notes = staging_paths(config, request)
        self.expected = request.sha256.lower()
        self.verified = "request" if self.expected else ""
        self.filename = request.filename
        self.kind = request.kind
        self.total = 0
        self._restart()

    def _restart(self) -> None:
        """Forget what was read of the file (a new attempt reads it again from its first byte)."""
        self.prefix = self.head = b""
        self.sniffed = self.head_done = self.checked_target = False
        self.hasher = hashlib.sha256()

    # -- helpers

    def fetch_json(self, url: str) -> Any:
        opened = open_url(
            url, self.policy, auth=self.tokens.headers_for, headers={"Accept": "application/json"}
        )
        if opened.response.status != 200:
            opened.close()
            raise RequestError("url", f"{urlsplit(url).hostname} answered {opened.response.status} for {url}")
        return json_of(read_json_bytes(opened), url)

    def _check_status(self, opened: Opened, offset: int) -> None:
        status = opened.response.status
        host = urlsplit(opened.url).hostname or ""
        if status in (401, 403):
            raise RequestError(
                "url",
                f"{host} answered {status} ({opened.response.reason}): the file needs a login or accepting "
                "its license. Store your Hugging Face token or Civitai API key in the download settings",
            )
        if status == 404:
            raise RequestError("url", f"{host} has no such file (404 Not Found)")
        if status not in (200, 206):
            raise RequestError("url", f"{host} answered {status} {opened.response.reason}")
        ctype = (opened.response.getheader("Content-Type") or "").lower()
        if "text/html" in ctype:
            raise RequestError(
                "url",
                f"{host} sent a web page (text/html), not a model file: a login, error or model page? Use "
                "the file's download link",
            )

    def _check_space(self, need: int) -> None:
        folder = self.part.parent
        free = shutil.disk_usage(folder).free
        if need + RESERVE_BYTES > free:
            raise DownloadFailed(
                f"not enough disk space: the file needs {human_bytes(need)} more but only "
                f"{human_bytes(free)} is free on the models disk (keeping {human_bytes(RESERVE_BYTES)} "
                "spare); free some space and try again (nothing was written)"
            )

    def _name_for(self, opened: Opened) -> str:
        """The server's name for the file (Content-Disposition), else the last part of the URL asked
        for, else of the URL that answered (a CDN's blob name is the last resort)."""
        candidates = [disposition_name(opened.response.msg)]
        candidates += [unquote(Path(urlsplit(u).path).name) for u in (*opened.hops[:1], opened.url)]
        names = [Path(c.replace("\\", "/")).name for c in candidates if c]
        name = next((n for n in names if n.lower().endswith(SUFFIXES)), None)
        if name is None:
            name = Path(names[0]).stem + ".safetensors" if names else "download.safetensors"
        try:
            return check_filename(name)
        except RequestError as e:
            message = f"the server's file name is not usable ({e.message}): give one"
            raise RequestError("filename", message) from e

    def _check_target(self) -> None:
        """Once kind and name are known: the target must not exist (a same-named other file)."""
        target = folder_for(self.kind, self.config) / self.filename
        if target.exists() and not (self.total and target.stat().st_size == self.total):
            raise RequestError(
                "filename",
                f"{target.parent.name}/{self.filename} already exists: give another filename (nothing is "
                "overwritten)",
            )
        self.checked_target = True

    def _sniff(self) -> None:
        """Refuse an HTML page (a login or error page served as a file) from the file's first bytes."""
        self.sniffed = True
        if self.prefix.lstrip().lower().startswith(_HTML_STARTS):
            raise RequestError(
                "url", "the server sent a web page, not a model file: use the file's download link"
            )

    def _feed(self, chunk: bytes) -> None:
        """The file's bytes in order from its start: its first bytes are sniffed, and once a safetensors
        header is complete the kind is read from it (unless chosen) and the target name checked."""
        if not self.sniffed:
            self.prefix += chunk[:64]
            if len(self.prefix) >= 64:
                self._sniff()
        if self.head_done:
            return
        self.head += chunk
        if len(self.head) > MAX_HEADER_BYTES + 8 or (len(self.head) > 8 and self.head[8:9] != b"{"):
            self.head, self.head_done = b"", True  # not safetensors (or a huge header): checked at the end
            return
        shapes = header_shapes(self.head)
        if shapes is None:
            return
        self.head, self.head_done = b"", True
        if not self.kind:
            found = detect_kind(shapes)
            if found is None:
                raise RequestError(
                    "kind",
                    "the file's tensors are not a checkpoint, LoRA, VAE, embedding, ControlNet, upscaler or "
                    "text encoder that Sfumato knows: choose the kind to keep it anyway",
                )
            self.kind = found
        if not self.checked_target:
            self._check_target()

    # -- the transfer

    def run(self) -> Downloaded:
        source = resolve_source(self.request.url, self.fetch_json, self.civitai_hosts)
        if source.sha256 and not self.expected:
            self.expected, self.verified = source.sha256, "source"
        if source.filename and not self.filename:
            self.filename = source.filename
        self.part.parent.mkdir(parents=True, exist_ok=True)
        failures = 0  # attempts in a row that brought no new byte
        while True:
            before = self._on_disk()
            try:
                if self._attempt(source):
                    break
                problem: BaseException = DownloadFailed("the server's ranges did not match the file")
            except ssl.SSLCertVerificationError as e:
                raise DownloadFailed(f"the server's certificate is not valid: {e.verify_message}") from e
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                problem = e
            failures = 1 if self._on_disk() > before else failures + 1
            if failures > self.retries:
                raise DownloadFailed(
                    f"the transfer failed {failures} times in a row ({type(problem).__name__}: {problem}); "
                    "start the download again to resume"
                ) from problem
            self._wait(min(0.2 * 2**failures, 5.0))
        return self._finish()

    def _on_disk(self) -> int:
        try:
            return self.part.stat().st_size
        except OSError:
            return 0

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_stop()
            time.sleep(0.05)

    def _check_stop(self) -> None:
        why = self.stop()
        if why == "cancel":
            remove(self.part, self.notes)
            raise DownloadCancelled()
        if why is not None:
            raise DownloadStopped()

    def _resume_point(self) -> tuple[int, dict[str, Any]]:
        try:
            notes = json.loads(self.notes.read_text(encoding="utf-8"))
            offset = self.part.stat().st_size
        except (OSError, ValueError):
            remove(self.part, self.notes)
            return 0, {}
        if not isinstance(notes, dict) or notes.get("url") != self.request.url:
            remove(self.part, self.notes)
            return 0, {}
        return offset, notes

    def _attempt(self, source: Source) -> bool:
        """One connection: True when the file is complete (False: go round again, from 0)."""
        self._check_stop()
        offset, notes = self._resume_point()
        if notes.get("total") and offset >= int(notes["total"]):  # complete before a restart
            self.total = int(notes["total"])
            self.filename = self.filename or str(notes.get("filename") or "")
            self.hasher = hashlib.sha256()
            with open(self.part, "rb") as f:
                while chunk := f.read(CHUNK * 8):
                    self.hasher.update(chunk)
            return True
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = notes.get("etag") or notes.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        opened = open_url(source.url, self.policy, headers=headers, auth=self.tokens.headers_for)
        try:
            response = opened.response
            if offset and response.status == 416:
                remove(self.part, self.notes)
                return False
            self._check_status(opened, offset)
            if not self.expected:
                published = published_sha256(opened.hops[0] if opened.hops else opened.url, opened.first)
                if published:
                    self.expected, self.verified = published, "source"
            length = int(response.getheader("Content-Length") or 0)
            if response.status == 206:
                found = content_range(response.getheader("Content-Range"))
                if found is None or found[0] != offset:
                    remove(self.part, self.notes)
                    return False
                self.total = found[1] or (offset + length if length else 0)
            else:
                if offset:  # the server sent the whole file (no ranges, or it changed): start over
                    remove(self.part, self.notes)
                    offset = 0
                self.total = length
            if not self.filename:
                self.filename = self._name_for(opened)
            else:
                self.filename = check_filename(Path(self.filename).name)
            if self.total:
                self._check_space(self.total - offset)
            self._restart()
            if offset:  # the bytes already here: hashed again, sniffed, their header read
                with open(self.part, "rb") as f:
                    while chunk := f.read(CHUNK * 8):
                        self.hasher.update(chunk)
                        self._feed(chunk)
            if self.kind and not self.checked_target:
                self._check_target()
            validators = {
                "url": self.request.url,
                "etag": response.getheader("ETag") or "",
                "last_modified": response.getheader("Last-Modified") or "",
                "total": self.total,
                "filename": self.filename,
            }
            self.notes.write_text(json.dumps(validators), encoding="utf-8")
            return self._body(response, offset)
        finally:
            opened.close()

    def _body(self, response: http.client.HTTPResponse, offset: int) -> bool:
        done = offset
        window = [(time.monotonic(), done)]
        last_report = 0.0
        # unbuffered: each chunk is one write(2), with no copy through a buffer
        with (
            open(self.part, "ab" if offset else "wb", buffering=0) as out,
            hashed_in_background(self.hasher) as hash_chunk,
        ):
            while True:
                self._check_stop()
                # what has arrived, up to CHUNK (a slow link still sees cancel at once); network
                # errors go up: the caller resumes
                chunk = response.read1(CHUNK)
                if not chunk:
                    break
                n = len(chunk)
                self._feed(chunk)
                hash_chunk(chunk)
                _write_all(out, chunk)
                done += n
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY:
                    window.append((now, done))
                    window = [w for w in window if now - w[0] <= 3.0] or window[-1:]
                    t0, d0 = window[0]
                    speed = (done - d0) / (now - t0) if now > t0 else 0.0
                    eta = (self.total - done) / speed if self.total and speed > 0 else None
                    self.report(Progress(done, self.total, speed, eta))
                    last_report = now
            os.fsync(out.fileno())
        if self.total and done < self.total:
            raise http.client.IncompleteRead(b"", self.total - done)
        if not self.sniffed:
            self._sniff()  # a file shorter than 64 bytes
        if not self.total:
            self.total = done
        self.report(Progress(done, self.total, 0.0, 0.0))
        return True

    def _finish(self) -> Downloaded:
        try:
            return self._place()
        except BaseException:
            remove(self.part, self.notes)
            raise

    def _place(self) -> Downloaded:
        part = self.part
        try:
            fmt = sniff_format(part)
        except CheckpointError as e:
            raise RequestError("url", "the file is not a model file (neither safetensors nor PyTorch)") from e
        if fmt == SAFETENSORS:
            try:
                shapes = {k: m.shape for k, m in read_safetensors_header(part).items()}
            except CheckpointError as e:
                raise RequestError("url", f"the file is a damaged safetensors file: {e}") from e
            if not self.kind:
                self.kind = detect_kind(shapes) or ""
        elif not self.request.kind:
            raise RequestError(
                "kind",
                "the file is a pickled PyTorch file: its kind cannot be read without loading it; choose the "
                "kind (safetensors files are recognised by themselves)",
            )
        if not self.kind:
            raise RequestError(
                "kind", "the file's tensors are none of the kinds Sfumato knows: choose the kind"
            )
        sha = self.hasher.hexdigest()
        if self.expected and sha != self.expected:
            by = "the request gives" if self.verified == "request" else "the source publishes"
            raise RequestError(
                "sha256",
                f"the downloaded file's sha256 is {sha} but {by} {self.expected}: the file was deleted "
                "(damaged in transit, or changed at the source)",
            )
        target = folder_for(self.kind, self.config) / self.filename
        size = part.stat().st_size
        if target.exists():
            if target.stat().st_size == size and sha256_file(target) == sha:
                remove(part, self.notes)
                return Downloaded(target, self.kind, sha, size, self.verified, existed=True)
            raise RequestError(
                "filename",
                f"{target.parent.name}/{self.filename} already exists: give another filename (nothing is "
                "overwritten)",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        move_into_place(part, target)
        remove(self.notes)
        return Downloaded(target, self.kind, sha, size, self.verified)


def _write_all(out: Any, data: bytes) -> None:
    """Write every byte (an unbuffered file's write may write fewer than it was given)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]


def download(
    request: DownloadRequest,
    config: AppConfig,
    policy: HostPolicy,
    *,
    tokens: Tokens | None = None,
    progress: Callable[[Progress], None] | None = None,
    stop: Stop | None = None,
    retries: int = 5,
    civitai_hosts: tuple[str, ...] = CIVITAI_HOSTS,
) -> Downloaded:
    """Fetch `request` into its models folder (see the module docstring). RequestError naming the field
    at fault for what the user can change (URL, host, hash, kind, name); DownloadFailed when the network
    or the disk did not allow it; DownloadCancelled / DownloadStopped when `stop` said so."""
    request.validate()
    transfer = _Transfer(
        request,
        config,
        policy,
        tokens or Tokens(),
        progress or (lambda p: None),
        stop or (lambda: None),
        retries,
        civitai_hosts,
    )
    try:
        return transfer.run()
    except RequestError:
        remove(transfer.part, transfer.notes)
        raise
    except DownloadFailed as e:
        if "disk space" in str(e):
            remove(transfer.part, transfer.notes)
        raise
