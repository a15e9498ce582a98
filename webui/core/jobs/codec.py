"""Requests to JSON and back, for the job store.

Plain JSON where JSON can say it; tagged objects where it cannot:

    tuple                -> list (back to a tuple for fields declared as tuples)
    inf, -inf, nan       -> {"$float": "inf"}        (JSON has no infinities; s_tmax defaults to inf)
    PIL image            -> {"$image": "input-0.png"} (a PNG file in the job's folder; never base64 in SQLite)

A request kind maps to its class through REQUEST_KINDS, so a new kind is one line there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from webui.core.downloads.request import DownloadRequest
from webui.core.tasks.extras import ExtrasRequest
from webui.core.types import GenerationRequest, Img2ImgRequest, RequestError, Txt2ImgRequest

JobRequest = GenerationRequest | ExtrasRequest | DownloadRequest  # what a job runs
REQUEST_KINDS: dict[str, type[JobRequest]] = {
    "txt2img": Txt2ImgRequest,
    "img2img": Img2ImgRequest,
    "extras": ExtrasRequest,
    "download": DownloadRequest,
}
BACKGROUND_KINDS = frozenset({"download"})  # run by the queue's own background worker, not a device's

_FLOAT_TAG = "$float"
_IMAGE_TAG = "$image"


def kind_of(request: JobRequest) -> str:
    """The registered kind of this request's class ("txt2img", ...)."""
    for kind, cls in REQUEST_KINDS.items():
        if type(request) is cls:
            return kind
    known = ", ".join(REQUEST_KINDS)
    raise RequestError("kind", f"{type(request).__name__} is not a job kind; known: {known}")


def request_to_json(request: JobRequest, *, image_dir: Path | None = None) -> dict[str, Any]:
    """Every field of the request as JSON-safe values. Images are written as PNG files into image_dir."""
    images: list[int] = [0]  # a counter shared by the walk
    out: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        out[f.name] = _encode(getattr(request, f.name), f.name, image_dir, images)
    return out


def request_from_json(kind: str, data: dict[str, Any], *, image_dir: Path | None = None) -> JobRequest:
    """The request of this kind from request_to_json's output. Missing fields take their defaults."""
    cls = REQUEST_KINDS.get(kind)
    if cls is None:
        raise RequestError("kind", f"unknown job kind {kind!r}; known: {', '.join(REQUEST_KINDS)}")
    if not isinstance(data, dict):
        raise RequestError("request", "must be a JSON object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, raw in data.items():
        f = known.get(name)
        if f is None:
            raise RequestError(name, f"is not a field of a {kind} request")
        value = _decode(raw, name, image_dir)
        if "tuple" in str(f.type):
            value = _tuples(value)
        values[name] = value
    return cls(**values)


def _encode(value: Any, name: str, image_dir: Path | None, images: list[int]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v, name, image_dir, images) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise RequestError(name, f"keys must be text, got {bad[0]!r}")
        return {k: _encode(v, f"{name}.{k}", image_dir, images) for k, v in value.items()}
    if isinstance(value, Image.Image):
        if image_dir is None:
            raise RequestError(name, "holds an image, but no folder was given to store it in")
        file_name = f"input-{images[0]}.png"
        images[0] += 1
        _save_png(value, image_dir / file_name)
        return {_IMAGE_TAG: file_name}
    raise RequestError(name, f"cannot be stored: {type(value).__name__} is not JSON")


def _decode(value: Any, name: str, image_dir: Path | None) -> Any:
    if isinstance(value, list):
        return [_decode(v, name, image_dir) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_FLOAT_TAG}:
        text = value[_FLOAT_TAG]
        if text not in ("inf", "-inf", "nan"):
            raise RequestError(name, f"bad number {text!r}")
        return float(text)
    if set(value) == {_IMAGE_TAG}:
        return _load_png(value[_IMAGE_TAG], name, image_dir)
    return {k: _decode(v, f"{name}.{k}", image_dir) for k, v in value.items()}


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_png(file_name: Any, name: str, image_dir: Path | None) -> Image.Image:
    """An image stored by _save_png: a bare file name inside image_dir, nothing else."""
    if image_dir is None:
        raise RequestError(name, "refers to a stored image, but no folder was given to read it from")
    if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in ("", ".", ".."):
        raise RequestError(name, f"bad stored image name {file_name!r}")
    path = image_dir / file_name
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError) as e:
        raise RequestError(name, f"stored image {file_name} cannot be read: {e}") from e
