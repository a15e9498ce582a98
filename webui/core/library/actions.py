"""What the API and the UI do to a card, written once: find it by (kind, file), serve its preview, save
its sidecar, fetch its info from Civitai.

A card is named by its kind and its path under its kind folder, exactly as the listing gives it; the
file is looked up among the scanned cards, never joined onto a folder, so no request can reach a path
the scan did not list. Names with `..`, backslashes, absolute paths or NUL are refused before the
look-up with a clear message. A preview is served only when its real path (symlinks resolved) is inside
the real path of the folder its card was found in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.core.atomic import write_atomic
from webui.core.config import AppConfig
from webui.core.downloads.files import human_bytes
from webui.core.library import civitai
from webui.core.library.cards import KINDS, SHORT, Card, CardLibrary
from webui.core.library.sidecar import sidecar_path, write_sidecar
from webui.core.models.hashes import HashCache, sha256_file
from webui.core.types import RequestError

log = logging.getLogger(__name__)
Settings = Callable[[str], Any]


class CardNotFound(LookupError):
    """No listed card has this kind and file."""


def check_name(kind: str, file: str) -> None:
    """RequestError naming the field unless `kind` is a known kind and `file` a plain relative path."""
    if kind not in KINDS:
        raise RequestError("kind", f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    parts = file.split("/")
    if (
        not file
        or "\\" in file
        or "\0" in file
        or file.startswith("/")
        or (len(file) > 1 and file[1] == ":")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise RequestError(
            "file", "must be a model file's path under its folder, as the card listing gives it"
        )


def card_of(library: CardLibrary, kind: str, file: str) -> Card:
    """The listed card, or RequestError (a bad name) / CardNotFound (nothing listed by that name)."""
    check_name(kind, file)
    card = library.find(kind, file)
    if card is None:
        raise CardNotFound(f"no {kind} file {file!r} is listed (refresh the library after adding files)")
    return card


def preview_of(library: CardLibrary, kind: str, file: str) -> Path:
    """The card's preview file, checked to lie inside the card's folder; CardNotFound otherwise."""
    card = card_of(library, kind, file)
    if card.preview is None:
        raise CardNotFound(f"{file} has no preview picture")
    real = Path(os.path.realpath(card.preview))
    root = Path(os.path.realpath(card.folder))
    if not real.is_relative_to(root) or not real.is_file():
        raise CardNotFound(f"{file} has no preview picture")
    return real


def header_metadata(card: Card) -> dict[str, Any]:
    """The `__metadata__` of the card's safetensors header (JSON-in-string values decoded, as A1111's
    /sdapi/v1/loras); {} for other files or an unreadable header."""
    from webui.core.models.checkpoint_file import CheckpointError
    from webui.core.networks.registry import read_metadata

    try:
        return read_metadata(card.path)
    except (OSError, CheckpointError):
        return {}


def training_tags(metadata: Mapping[str, Any], limit: int = 20) -> list[tuple[str, int]]:
    """The most frequent training tags kohya's trainer recorded (`ss_tag_frequency`, summed over its
    folders), most frequent first: [(tag, count)]."""
    folders = metadata.get("ss_tag_frequency")
    counts: dict[str, int] = {}
    for tags in folders.values() if isinstance(folders, dict) else ():
        for tag, n in tags.items() if isinstance(tags, dict) else ():
            if isinstance(n, int) and not isinstance(n, bool) and str(tag).strip():
                counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + n
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


def save_user_metadata(library: CardLibrary, kind: str, file: str, values: Mapping[str, Any]) -> Card:
    """Merge `values` (A1111 sidecar keys) into the card's `name.json`, atomically; the fresh card."""
    card = card_of(library, kind, file)
    with library.edits:
        write_sidecar(card.sidecar or sidecar_path(card.path), values)
        return library.refresh_card(card)


@dataclass(frozen=True)
class FetchResult:
    card: Card
    info: civitai.CivitaiInfo
    sha256: str
    wrote_preview: bool
    filled: tuple[str, ...]  # sidecar keys Civitai's answer filled
    preview_problem: str = ""  # why no preview was saved, when one was wanted

    def message(self) -> str:
        name = self.info.model_name or self.card.name
        parts = [
            f"Found {name}"
            + (f" ({self.info.version_name})" if self.info.version_name else "")
            + " on Civitai"
        ]
        if self.wrote_preview:
            parts.append("saved its preview")
        elif self.preview_problem:
            parts.append(f"no preview saved ({self.preview_problem})")
        else:
            parts.append("kept the preview already there" if self.card.preview else "it shows no picture")
        parts.append(
            f"filled {', '.join(self.filled)}" if self.filled else "the notes already had every field"
        )
        return "; ".join(parts) + "."


Step = Callable[[str, float | None], None]  # (what is happening, the fraction done when known)


def no_step(text: str, fraction: float | None) -> None:
    pass


def file_sha256(card: Card, config: AppConfig, step: Step = no_step) -> str:
    """The whole file's sha256 (Civitai's SHA256): from the hash cache, computed and cached when not
    there; computed without caching under --no-hashing (the user asked for this one file). A file that
    is hashed reports its progress to `step`."""
    cache = HashCache(config.cache_dir / "hashes.sqlite") if config.hashing else None
    cached = cache.get(card.path) if cache is not None else None
    if cached:
        return cached
    label = f"Hashing {card.file} ({human_bytes(card.size)})"
    step(label, 0.0)
    digest = sha256_file(card.path, lambda done, total: step(label, done / total if total else None))
    if cache is not None:
        cache.record(card.path, digest)
    return digest


def fetch_info(
    library: CardLibrary,
    kind: str,
    file: str,
    config: AppConfig,
    settings: Settings | None,
    *,
    replace_preview: bool = False,
    step: Step = no_step,
) -> FetchResult:
    """Look the card's file up on Civitai by hash; write its first picture as `name.preview.png` (when
    the card has no preview, or `replace_preview`) and fill the sidecar keys the user left empty.
    NotOnCivitai / CivitaiError / RequestError say why nothing was written. `step` hears each stage
    (hashing with its fraction, the look-up, the picture) as it starts."""
    from webui.core.downloads.job import policy_of, tokens_of

    card = card_of(library, kind, file)
    if card.is_folder:
        raise RequestError(
            "file",
            f"{card.file} is a diffusers folder: Civitai looks models up by the hash of one file, so "
            "fetch info works on single-file models only",
        )
    policy = policy_of(config, settings)
    tokens = tokens_of(settings)
    sha = file_sha256(card, config, step)
    step(f"Asking Civitai about {sha[:SHORT]}", None)
    info = civitai.lookup(sha, config.civitai_url, policy, tokens)
    picture = None
    problem = ""
    if info.image_urls and (card.preview is None or replace_preview):
        step("Fetching the preview picture", None)
        try:
            picture = civitai.fetch_picture(info.image_urls[0], policy, tokens)
        except (civitai.CivitaiError, RequestError) as e:  # the text is still worth saving
            problem = e.message if isinstance(e, RequestError) else str(e)
            log.warning("%s: %s", card.file, problem)
    with library.edits:
        card = library.refresh_card(card)  # notes saved while Civitai was asked count as the user's
        values = civitai.sidecar_values(info, card.user, config.civitai_url)
        if values:  # first: a sidecar that cannot be merged stops it before anything is written
            write_sidecar(card.sidecar or sidecar_path(card.path), values)
        if picture is not None:
            write_atomic(card.path.parent / f"{card.name}.preview.png", picture)
        fresh = library.refresh_card(card)
    return FetchResult(fresh, info, sha, picture is not None, tuple(values), problem)
