"""User settings persisted in config.json, under A1111's keys (the ones GET /sdapi/v1/options shows).

The keys Sfumato uses are typed and validated (SPECS). Everything else in an A1111 config.json is kept
and written back untouched, so pointing Sfumato at an existing install loses nothing. A file that
cannot be read is moved aside (config.json.corrupt-<time>) and defaults are used, with a `problem`
message: a bad file never stops the start. Saving is atomic (temporary file, fsync, rename).

    settings = Settings.load(config.settings_path)
    settings = settings.updated({"CLIP_stop_at_last_layers": 2}, validate_checkpoint=check)
    settings.save()
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any

from webui.core.atomic import write_atomic
from webui.core.faces import CODEFORMER, KINDS
from webui.core.types import MAX_SEED, RequestError

Check = Callable[[Any], None]  # raises ValueError with the reason


@dataclass(frozen=True)
class SettingSpec:
    key: str
    default: Any
    kind: type  # bool, int, float or str
    label: str
    nullable: bool = False
    check: Check | None = None

    def coerce(self, value: Any) -> Any:
        """The value as this setting's type, or RequestError naming the key."""
        if value is None and self.nullable:
            return None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is list and isinstance(value, (list, tuple)):  # a fresh list: callers may change it
            value = list(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise RequestError(self.key, f"must be {_KIND_NAMES[self.kind]}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(self.key, f"must be a finite number, got {value!r}")
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                raise RequestError(self.key, str(e)) from e
        return value


_KIND_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text",
    list: "a list of setting names",
}


def _between(lo: float, hi: float) -> Check:
    def check(value: Any) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {value:g}")

    return check


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return check


OUTPUTS = "outputs"  # the first part of every output folder setting


def output_folder_parts(value: str) -> tuple[str, ...]:
    """The parts of an output folder setting below `outputs/` ("" -> ())."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    return tuple(parts[1:]) if parts and parts[0] == OUTPUTS else tuple(parts)


def _output_folder(value: Any) -> None:
    """An output folder: `outputs/<folders>` relative to the data folder ("" = the default). Images
    are served to browsers and clients only from the outputs folder, so nothing may point elsewhere."""
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    if not value:
        return
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or ":" in value:
        raise ValueError(f"must be a folder under outputs/ (such as outputs/portraits), got {value!r}")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts:
        raise ValueError(f"must not contain '..', got {value!r}")
    if not parts or parts[0] != OUTPUTS:
        raise ValueError(
            f"must be a folder under outputs/ (such as outputs/portraits), got {value!r}: images are "
            "served only from the outputs folder"
        )


def _hosts(value: Any) -> None:
    """A comma-separated list of host names or IP addresses ("" = none)."""
    from webui.core.downloads.policy import check_host_entry, parse_hosts

    for host in parse_hosts(value):
        check_host_entry(host)


def _token(value: Any) -> None:
    if any(ord(c) < 33 for c in value) or len(value) > 500:
        raise ValueError("must be the token alone (no spaces or control characters, at most 500 characters)")


QUICKSETTINGS_DEFAULT = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")


def _quicksettings(value: Any) -> None:
    """A list of settings to show in the top row: known, shown (not a credential), each once."""
    allowed = quick_setting_keys()
    for name in value:
        if name not in allowed:
            raise ValueError(f"{name!r} is not a setting that can be shown in the top row")
    if len(set(value)) != len(value):
        raise ValueError("names a setting twice")


def known_quicksettings(value: Any) -> list[str] | None:
    """An A1111 `quicksettings_list` read from config.json, less the names Sfumato has no setting for
    (`sd_lora`, `sd_hypernetwork`, ...): the names it can show, each once, in order; None when the value
    is not a list of names or names none of them."""
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        return None
    allowed = quick_setting_keys()
    kept = [n for n in dict.fromkeys(value) if n in allowed]
    return kept or None


def quick_setting_keys() -> tuple[str, ...]:
    """The settings `quicksettings_list` may name (every shown setting but the list itself)."""
    return tuple(k for k in SPECS if k not in SECRET_KEYS and k != "quicksettings_list")


def _specs(*specs: SettingSpec) -> Mapping[str, SettingSpec]:
    return MappingProxyType({s.key: s for s in specs})


FORMATS = ("png", "jpg", "jpeg", "webp")
SPECS: Mapping[str, SettingSpec] = _specs(
    SettingSpec("sd_model_checkpoint", None, str, "Stable Diffusion checkpoint", nullable=True),
    SettingSpec("sd_vae", "Automatic", str, "SD VAE"),
    SettingSpec("CLIP_stop_at_last_layers", 1, int, "Clip skip", check=_between(1, 12)),
    SettingSpec("eta_noise_seed_delta", 0, int, "Eta noise seed delta (ENSD)", check=_between(0, MAX_SEED)),
    SettingSpec("randn_source", "CPU", str, "Random number generator source", check=_one_of("CPU")),
    SettingSpec("eta_ddim", 0.0, float, "Eta for DDIM (when a request leaves eta out)", check=_between(0, 1)),
    SettingSpec("s_churn", 0.0, float, "sigma churn", check=_between(0, 100)),
    SettingSpec("s_tmin", 0.0, float, "sigma tmin", check=_between(0, 10)),
    SettingSpec("s_tmax", 0.0, float, "sigma tmax (0 = infinity)", check=_between(0, 999)),
    SettingSpec("s_noise", 1.0, float, "sigma noise", check=_between(0, 1.1)),
    SettingSpec("samples_save", True, bool, "Always save all generated images"),
    SettingSpec("samples_format", "png", str, "File format for images", check=_one_of(*FORMATS)),
    SettingSpec("save_images_add_number", True, bool, "Add number to filename when saving"),
    SettingSpec("grid_save", True, bool, "Always save all generated image grids"),
    SettingSpec("grid_format", "png", str, "File format for grids", check=_one_of(*FORMATS)),
    SettingSpec("jpeg_quality", 80, int, "Quality for saved jpeg and webp images", check=_between(1, 100)),
    SettingSpec("enable_pnginfo", True, bool, "Save text information about generation parameters"),
    SettingSpec(
        "save_images_before_face_restoration",
        False,
        bool,
        "Save a copy of image before doing face restoration.",
    ),
    SettingSpec("outdir_samples", "", str, "Output directory for images", check=_output_folder),
    SettingSpec(
        "outdir_txt2img_samples", "outputs/txt2img-images", str, "txt2img images", check=_output_folder
    ),
    SettingSpec(
        "outdir_img2img_samples", "outputs/img2img-images", str, "img2img images", check=_output_folder
    ),
    SettingSpec("outdir_grids", "", str, "Output directory for grids", check=_output_folder),
    SettingSpec("outdir_txt2img_grids", "outputs/txt2img-grids", str, "txt2img grids", check=_output_folder),
    SettingSpec("outdir_img2img_grids", "outputs/img2img-grids", str, "img2img grids", check=_output_folder),
    SettingSpec("live_previews_enable", True, bool, "Show live previews of the created image"),
    SettingSpec("show_progress_every_n_steps", 10, int, "Live preview every N steps", check=_between(-1, 32)),
    SettingSpec(
        "show_progress_type",
        "Approx cheap",
        str,
        "Live preview method: Approx cheap (latent colours), TAESD (models/VAE-approx), Full (the VAE)",
        check=_one_of("Full", "Approx NN", "Approx cheap", "TAESD"),
    ),
    SettingSpec(
        "image_memory_limit_mb",
        0,
        int,
        "Largest memory a job's pictures may need even with the tiled VAE, in MiB (0: half this machine's "
        "RAM); a larger size or batch is refused with the largest that fits",
        check=_between(0, 1 << 30),
    ),
    SettingSpec(
        "initial_noise_multiplier", 1.0, float, "Noise multiplier for img2img", check=_between(0, 1.5)
    ),
    SettingSpec(
        "download_hosts",
        "",
        str,
        "Download hosts besides huggingface.co, hf.co and civitai.com (comma-separated; public addresses)",
        check=_hosts,
    ),
    SettingSpec("hf_token", "", str, "Hugging Face token (gated repos)", check=_token),
    SettingSpec("civitai_api_key", "", str, "Civitai API key", check=_token),
    SettingSpec(
        "face_restoration", False, bool, "Restore faces (when an API request leaves restore_faces out)"
    ),
    SettingSpec(
        "face_restoration_model",
        CODEFORMER,
        str,
        "Face restoration model (its file in models/Codeformer or models/GFPGAN)",
        check=_one_of(*KINDS),
    ),
    SettingSpec(
        "code_former_weight",
        0.5,
        float,
        "CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
        check=_between(0, 1),
    ),
    SettingSpec(
        "quicksettings_list",
        QUICKSETTINGS_DEFAULT,
        list,
        "Quicksettings list (the settings shown in the top row)",
        check=_quicksettings,
    ),
)
# Credentials: stored in config.json (the server's side) and used by downloads, never shown: left out of
# `as_dict` (so GET /sdapi/v1/options, the Settings tab and logs never hold them); `is_set` tells
# whether one is stored.
SECRET_KEYS = frozenset({"hf_token", "civitai_api_key"})
# Settings that are the defaults of request fields: the studio's tabs and the A1111 API use them when a
# request leaves the field out (as A1111 reads its opts); the native jobs API takes requests as sent.
# (each has the request field's name; s_tmax and eta_ddim need a translation, below)
_REQUEST_DEFAULTS = (
    "s_churn",
    "s_tmin",
    "s_noise",
    "eta_noise_seed_delta",
    "initial_noise_multiplier",
    "face_restoration_model",
    "code_former_weight",
)


def request_defaults(
    get: Callable[[str], Any], fields: Collection[str], sampler_name: str | None = None
) -> dict[str, Any]:
    """The request fields (among `fields`) the stored settings give when a request leaves them out:
    sigma churn/tmin/tmax/noise, ENSD, img2img's noise multiplier, eta for DDIM (`eta_ddim`), and face
    restoration (`face_restoration` -> restore_faces, `face_restoration_model`, `code_former_weight`)."""
    out: dict[str, Any] = {}
    for name in _REQUEST_DEFAULTS:
        value = get(name)
        if name in fields and value is not None:
            out[name] = value
    tmax = get("s_tmax")
    if "s_tmax" in fields and tmax is not None:
        out["s_tmax"] = float(tmax) if tmax > 0 else math.inf  # A1111: 0 means no upper bound
    eta = get("eta_ddim")
    if "eta" in fields and sampler_name == "DDIM" and eta is not None:
        out["eta"] = eta
    restore = get("face_restoration")
    if "restore_faces" in fields and restore is not None:
        out["restore_faces"] = restore
    return out


REQUEST_DEFAULT_SETTINGS = frozenset({*_REQUEST_DEFAULTS, "s_tmax", "eta_ddim", "face_restoration"})
MAX_UNKNOWN_KEY_CHARS = 200
# Keys Sfumato does not use are kept for A1111 clients that write them back, within bounds: a client
# cannot grow config.json without end (the count and the JSON size of all unknown values together).
MAX_UNKNOWN_KEYS = 1024
MAX_UNKNOWN_BYTES = 1 << 20


class Settings:
    """One immutable view of config.json: typed values for SPECS, everything else as it was."""

    def __init__(self, path: Path, raw: Mapping[str, Any] | None = None, problem: str | None = None) -> None:
        self.path = Path(path)
        self._raw: Mapping[str, Any] = MappingProxyType(dict(raw or {}))
        self.problem = problem

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Read config.json. Missing: defaults. Unreadable: moved aside, defaults, and `problem` says so.
        Known keys with bad values are kept in the file but not used (their defaults are), also noted."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        except FileNotFoundError:
            return cls(path)
        except (ValueError, UnicodeDecodeError) as e:
            return cls(path, problem=_set_aside(path, f"{type(e).__name__}: {e}"))
        except OSError as e:
            return cls(path, problem=f"settings file {path} cannot be read ({e}); default settings are used")
        settings = cls(path, data)
        bad = []
        for key, spec in SPECS.items():
            if key in data:
                try:
                    spec.coerce(data[key])
                except RequestError as e:
                    kept = known_quicksettings(data[key]) if key == "quicksettings_list" else None
                    if kept is None:
                        bad.append(str(e))
                    else:
                        left = [n for n in data[key] if n not in kept]
                        bad.append(
                            f"quicksettings_list: {', '.join(map(repr, left))} left out (not settings here)"
                        )
        if bad:
            settings.problem = f"{path}: some values are not usable, their defaults are used: " + "; ".join(
                bad
            )
        return settings

    def get(self, key: str) -> Any:
        spec = SPECS.get(key)
        if spec is None:
            if key not in self._raw:
                raise KeyError(f"no setting {key!r}")
            return self._raw[key]
        if key not in self._raw:
            return list(spec.default) if spec.kind is list else spec.default
        try:
            return spec.coerce(self._raw[key])
        except RequestError:
            if key == "quicksettings_list":  # an A1111 list naming settings we lack: the ones we have
                return known_quicksettings(self._raw[key]) or list(spec.default)
            return list(spec.default) if spec.kind is list else spec.default

    def as_dict(self) -> dict[str, Any]:
        """Every setting: the file's keys (unknown ones as they are) and every known key's value in use."""
        out = dict(self._raw)
        out.update({key: self.get(key) for key in SPECS})
        for key in SECRET_KEYS:
            out.pop(key, None)
        return out

    def updated(
        self,
        changes: Mapping[str, Any],
        validate_checkpoint: Callable[[str], object] | None = None,
        *,
        validate_vae: Callable[[str], object] | None = None,
    ) -> Settings:
        """A new Settings with changes applied; every key is validated first (RequestError naming it).
        Nothing is written here: call save(). validate_checkpoint/validate_vae raise for unknown names."""
        if not isinstance(changes, Mapping):
            raise RequestError("options", "must be a JSON object of setting names and values")
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            spec = SPECS.get(key) if isinstance(key, str) else None
            if spec is not None:
                clean[key] = spec.coerce(value)
            else:
                clean[key] = _unknown_value(key, value)
        _check_unknown_room(self._raw, clean)
        checks = (("sd_model_checkpoint", validate_checkpoint), ("sd_vae", validate_vae))
        for key, validator in checks:
            if validator is not None and clean.get(key) is not None:
                try:
                    validator(clean[key])
                except RequestError:
                    raise
                except (LookupError, ValueError) as e:
                    raise RequestError(key, str(e).strip("'\"")) from e
        return Settings(self.path, {**self._raw, **clean})

    def save(self) -> None:
        """Write the file atomically: a reader (or a crash) sees the old file or the new one, whole."""
        text = json.dumps(dict(self._raw), indent=4, ensure_ascii=False, allow_nan=False)
        write_atomic(self.path, text.encode("utf-8"))


class SettingsStore:
    """The one current Settings of a running server (the API's options, the Settings tab, the top bar's
    defaults all read it here), replaced whole under a lock: readers never see half an update."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._settings = Settings.load(path)

    @property
    def current(self) -> Settings:
        return self._settings

    @property
    def problem(self) -> str | None:
        """Why the file could not be used as it is (read at start), or None."""
        return self._settings.problem

    def as_dict(self) -> dict[str, Any]:
        return self._settings.as_dict()

    def is_set(self, key: str) -> bool:
        """Whether a setting (a secret one, say) holds a non-empty value."""
        return bool(self.get(key))

    def get(self, key: str) -> Any:
        """A setting's value in use; None for a key that is neither known nor in the file."""
        try:
            return self._settings.get(key)
        except KeyError:
            return None

    def update(
        self,
        changes: Mapping[str, Any],
        validate_checkpoint: Callable[[str], object] | None = None,
        validate_vae: Callable[[str], object] | None = None,
    ) -> Settings:
        """Validate every change, write config.json atomically, then publish. On any error nothing
        changes, on disk or here."""
        with self._lock:
            new = self._settings.updated(changes, validate_checkpoint, validate_vae=validate_vae)
            new.save()
            self._settings = new
            return new


def _unknown_value(key: Any, value: Any) -> Any:
    if not isinstance(key, str) or not key or len(key) > MAX_UNKNOWN_KEY_CHARS:
        raise RequestError(str(key)[:MAX_UNKNOWN_KEY_CHARS], "is not a valid setting name")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RequestError(key, f"cannot be stored: {e}") from e
    return value


def _check_unknown_room(raw: Mapping[str, Any], clean: Mapping[str, Any]) -> None:
    """RequestError naming the first new or changed unknown key that takes the stored unknown keys past
    MAX_UNKNOWN_KEYS or MAX_UNKNOWN_BYTES (keys already stored count; known settings never do)."""
    changed = [k for k in clean if k not in SPECS]
    if not changed:
        return
    merged = {k: v for k, v in {**raw, **clean}.items() if k not in SPECS}
    kept = {k: v for k, v in merged.items() if k not in clean}
    count = len(kept)
    size = sum(len(k) + len(json.dumps(v, ensure_ascii=False)) for k, v in kept.items())
    for key in changed:
        count += 1
        size += len(key) + len(json.dumps(clean[key], ensure_ascii=False))
        if count > MAX_UNKNOWN_KEYS:
            raise RequestError(
                key,
                f"too many unknown settings: at most {MAX_UNKNOWN_KEYS} keys Sfumato does not use are kept",
            )
        if size > MAX_UNKNOWN_BYTES:
            raise RequestError(
                key,
                f"unknown settings too large: keys Sfumato does not use may hold at most "
                f"{MAX_UNKNOWN_BYTES} bytes of JSON together",
            )


def _set_aside(path: Path, reason: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except OSError as e:
        return (
            f"settings file {path} is damaged ({reason}) and could not be moved aside ({e}); "
            "defaults are used"
        )
    return f"settings file {path} was damaged ({reason}); it was moved to {aside.name} and defaults are used"
