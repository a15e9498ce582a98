"""An extension's manifest (`extension.toml`) and the plugin-API version check done before any import.

    name = "wildcards"            # letters, digits, _ and -; the key of request.extension_args
    version = "1.2.0"
    description = "{a|b} variants and __name__ wildcard files"
    api_version = "2.1"           # the webui.plugins.api version it was written for
    entry = "wildcards"           # module inside the folder (wildcards.py or wildcards/__init__.py)
    requirements = ["dynamicprompts==0.31.0"]   # for information: never installed automatically
    a1111_names = ["Wildcards"]   # optional: what A1111 clients call it (alwayson_scripts keys,
                                  # /<name>/... root routes), e.g. "ADetailer" for the detailer
    rescan = true                 # optional: `register` only lists model files and may run again (the
                                  # UI's "Refresh upscalers" takes the upscalers it registers then)

An extension written for API "M.m" loads when M is this host's major version and m is at most its
minor version (minor versions only add to the API). API 2.0 only added to 1.0 (the before-model hook,
image fields, the job's components, the after-decode runner): every name 1.0 exported is still there
and means the same, so extensions written for 1.0 load unchanged (LEGACY lists such versions).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_VERSION = (2, 4)  # 2.1: Field.group (tabs in an accordion), `settings` in register
# 2.2: a sub-pass request's `extension_args` bring those extensions' hooks into it; img2img_work_image
# 2.3: ModelCallState.denoiser_kwargs / denoiser_latents (what SD3 / Flux transformers get)
# 2.4: a script's runner has `upscalers` (the studio's picture upscalers); Field kind "upscaler"
LEGACY = {1: 0}  # older majors still served: major -> the last minor this host provides of it
MANIFEST_NAME = "extension.toml"
EXTENSION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?$")
MAX_MANIFEST_BYTES = 64 * 1024


class ManifestError(ValueError):
    """A manifest is missing, unreadable or incompatible; the message says which and why."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    api_version: str
    entry: str  # module: relative to `folder` for folder extensions, absolute for pip ones
    requirements: tuple[str, ...] = ()
    folder: Path | None = None
    a1111_names: tuple[str, ...] = ()
    source: str = "builtin"  # builtin | user | pip
    rescan: bool = False  # its register hook may run again to list model files added since start

    @property
    def module_key(self) -> str:
        """The name's Python-safe form (used for the import package)."""
        return self.name.replace("-", "_")


def api_version_string() -> str:
    return f"{API_VERSION[0]}.{API_VERSION[1]}"


def check_api_version(name: str, wanted: str) -> None:
    """Raise ManifestError unless an extension for API `wanted` can run on this host."""
    m = _VERSION.match(wanted)
    if not m:
        raise ManifestError(f'{name}: api_version must look like "1.0", got {wanted!r}')
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    have = api_version_string()
    if major in LEGACY:
        if minor > LEGACY[major]:
            raise ManifestError(
                f"{name} needs plugin API {wanted}, which never existed: this Sfumato provides API {have} "
                f"and, for older extensions, API {major}.{LEGACY[major]}"
            )
        return
    if major != API_VERSION[0]:
        raise ManifestError(
            f"{name} targets plugin API {wanted}, but this Sfumato provides API {have}; it was not "
            f"loaded. Look for a version of the extension made for API {API_VERSION[0]}.x."
        )
    if minor > API_VERSION[1]:
        raise ManifestError(
            f"{name} needs plugin API {wanted}, newer than this Sfumato's {have}; update Sfumato to use it."
        )


def _text(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if isinstance(value, (int, float)) and key == "api_version":
        value = str(value)
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {key} must be a string" + ("" if key in data else " (missing)"))
    return value


def parse_manifest(path: Path, source: str = "builtin", folder: Path | None = None) -> Manifest:
    """Read and check one extension.toml (it is not imported or executed)."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"{where}: cannot read: {e.strerror or e}") from e
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: {len(raw)} bytes (limit {MAX_MANIFEST_BYTES})")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"{where}: not valid TOML: {e}") from e
    name = _text(data, "name", where)
    if not EXTENSION_NAME.match(name):
        raise ManifestError(f"{where}: name {name!r} must be letters, digits, _ or -, starting with a letter")
    entry = _text(data, "entry", where)
    if not _MODULE.match(entry):
        raise ManifestError(f'{where}: entry {entry!r} must be a module name such as "main"')
    requirements = data.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise ManifestError(f"{where}: requirements must be a list of strings")
    a1111 = data.get("a1111_names", [])
    if not isinstance(a1111, list) or not all(isinstance(n, str) and EXTENSION_NAME.match(n) for n in a1111):
        raise ManifestError(f"{where}: a1111_names must be a list of names (letters, digits, _ or -)")
    rescan = data.get("rescan", False)
    if not isinstance(rescan, bool):
        raise ManifestError(f"{where}: rescan must be true or false")
    return Manifest(
        name=name,
        version=_text(data, "version", where, "0"),
        description=_text(data, "description", where, ""),
        api_version=_text(data, "api_version", where),
        entry=entry,
        requirements=tuple(requirements),
        folder=folder if folder is not None else path.parent,
        source=source,
        a1111_names=tuple(a1111),
        rescan=rescan,
    )
