"""Writing finished images where A1111 users expect them, with their infotext embedded.

Layout: ``outputs/<kind>/YYYY-MM-DD/NNNNN-SEED.png``. A file appears whole or not at all: the image is
written to a hidden temporary file in the same folder, flushed to disk, then given its final name. The
number is chosen under a lock on the folder, and the final name is claimed with a hard link, which fails
rather than overwrite, so two writers (threads or processes) never share a number or clobber a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngImageFile, PngInfo

from webui.core.outputs.exif import JPEG_MAX_EXIF_BYTES, read_user_comment, user_comment_exif

IMAGE_KINDS: tuple[str, ...] = ("txt2img-images", "img2img-images", "txt2img-grids", "img2img-grids")
PARAMETERS_KEY = "parameters"  # the PNG text chunk A1111 and every reader use
# zlib level 4: on 512x512 images it is within ~3% of the default level 6 in size at about a third of
# the time on smooth content, and the same size as 6-9 on grainy content; level 1-3 files are 10-20% bigger.
PNG_COMPRESS_LEVEL = 4
DEFAULT_QUALITY = 95
# fmt argument -> (Pillow format, file suffix)
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "jpg": ("JPEG", ".jpg"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
}
_JPEG_MODES = ("RGB", "L", "CMYK")
_TEMP_SUFFIX = ".tmp"


def image_folder(outputs_dir: Path, kind: str, day: date) -> Path:
    """outputs/<kind>/YYYY-MM-DD (not created here)."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {', '.join(IMAGE_KINDS)}")
    return outputs_dir / kind / day.isoformat()


def next_image_number(folder: Path) -> int:
    """One more than the highest number starting a file name in folder (`00041-123.png` -> 42), as A1111."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    highest = -1
    for name in names:
        head = os.path.splitext(name)[0].split("-", 1)[0]
        if head.isascii() and head.isdigit():
            highest = max(highest, int(head))
    return highest + 1


def save_image(
    image: Image.Image,
    folder: Path,
    seed: int | None,
    infotext: str,
    fmt: str = "png",
    *,
    quality: int = DEFAULT_QUALITY,
    extra_text: Mapping[str, str] | None = None,
    numbered: bool = True,
    suffix: str = "",
) -> Path:
    """Write image as folder/NNNNN-SEED.<fmt> (NNNNN.<fmt> when seed is None) with infotext
    embedded; return the path. `suffix` goes after the name, before the extension, as A1111's
    (`00012-7-before-face-restoration.png`).

    PNG keeps the infotext in a `parameters` text chunk (iTXt when it is not Latin-1), and each
    `extra_text` item in a chunk of its own; JPEG and WebP keep the infotext in EXIF UserComment (no
    extra chunks). quality applies to JPEG and WebP. Without `numbered` (A1111's "Add number to
    filename" off) the name is SEED.<fmt>, then SEED-1.<fmt>, ... so nothing is overwritten. On any error
    nothing is left behind.
    """
    if any(c in suffix for c in "/\\") or any(ord(c) < 32 for c in suffix):
        raise ValueError(
            f"a file name suffix must not hold path separators or control characters: {suffix!r}"
        )
    pil_format, extension = _resolve_format(fmt)
    options = _encoder_options(pil_format, infotext, quality, extra_text or {})
    if pil_format == "JPEG" and image.mode not in _JPEG_MODES:
        image = image.convert("RGB")  # JPEG has no alpha channel
    folder.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(image, folder, pil_format, options)
    try:
        with _folder_lock(folder):
            final = (
                _publish(temp, folder, seed, suffix + extension)
                if numbered or seed is None
                else _publish_plain(temp, folder, f"{seed}{suffix}", extension)
            )
    finally:
        temp.unlink(missing_ok=True)
    _fsync_folder(folder)
    return final


def read_infotext(source: str | os.PathLike[str] | Image.Image) -> str | None:
    """The infotext stored in an image file or an opened image, or None when it has none."""
    if isinstance(source, Image.Image):
        return _read_infotext(source)
    with Image.open(source) as image:
        return _read_infotext(image)


def _read_infotext(image: Image.Image) -> str | None:
    value = image.info.get(PARAMETERS_KEY)
    if value is None and isinstance(image, PngImageFile):
        value = image.text.get(PARAMETERS_KEY)  # text chunks after the image data
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return read_user_comment(image)


def _resolve_format(fmt: str) -> tuple[str, str]:
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {', '.join(FORMATS)}") from None


def _encoder_options(
    pil_format: str, infotext: str, quality: int, extra_text: Mapping[str, str]
) -> dict[str, Any]:
    if pil_format == "PNG":
        options: dict[str, Any] = {"compress_level": PNG_COMPRESS_LEVEL}
        chunks = {PARAMETERS_KEY: infotext, **extra_text} if infotext else dict(extra_text)
        if chunks:
            options["pnginfo"] = _png_text(chunks)
        return options
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")
    options = {"quality": quality}
    if infotext:
        exif = user_comment_exif(infotext)
        if pil_format == "JPEG" and len(exif) > JPEG_MAX_EXIF_BYTES:
            raise ValueError(
                f"infotext too long for JPEG EXIF ({len(exif)} bytes > {JPEG_MAX_EXIF_BYTES});"
                " save as PNG or WebP"
            )
        options["exif"] = exif
    return options


def _png_text(chunks: Mapping[str, str]) -> PngInfo:
    info = PngInfo()
    for key, text in chunks.items():
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            info.add_itxt(key, text)
        else:
            info.add_text(key, text)
    return info


def _write_temp(image: Image.Image, folder: Path, pil_format: str, options: dict[str, Any]) -> Path:
    """Encode into a new hidden file in folder, flushed to disk; removed again on any error."""
    while True:
        temp = folder / f".{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        try:
            file = open(temp, "xb")  # noqa: SIM115 - closed below; O_EXCL, honours the umask
        except FileExistsError:
            continue
        break
    try:
        with file:
            image.save(file, format=pil_format, **options)
            file.flush()
            os.fsync(file.fileno())
    except OSError as e:
        temp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: say which folder (a full disk)
            raise OSError(e.errno, e.strerror, str(folder)) from e
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _publish(temp: Path, folder: Path, seed: int | None, suffix: str) -> Path:
    """Give temp the next free NNNNN-SEED<suffix> (or NNNNN<suffix>) name; the caller holds the folder
    lock."""
    number = next_image_number(folder)
    while True:
        final = folder / (f"{number:05}{suffix}" if seed is None else f"{number:05}-{seed}{suffix}")
        try:
            os.link(temp, final)  # atomic, and never replaces an existing file
            return final
        except FileExistsError:
            number += 1
        except OSError:  # no hard links on this file system (FAT, some shares)
            if final.exists():
                number += 1
                continue
            os.replace(temp, final)
            return final


def _publish_plain(temp: Path, folder: Path, name: str, suffix: str) -> Path:
    """Give temp the name NAME<suffix>, or NAME-N<suffix> with the first free N; the caller holds the lock."""
    n = 0
    while True:
        final = folder / (f"{name}{suffix}" if n == 0 else f"{name}-{n}{suffix}")
        try:
            os.link(temp, final)
            return final
        except FileExistsError:
            n += 1
        except OSError:
            if final.exists():
                n += 1
                continue
            os.replace(temp, final)
            return final


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive between threads and processes while a number is chosen and claimed."""
    if sys.platform == "win32":
        import msvcrt

        with open(folder / ".sfumato-lock", "a+b") as lock_file:
            lock_file.seek(0)
            while True:
                try:
                    msvcrt.locking(lock_file.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s of contention
                    continue
            try:
                yield
            finally:
                lock_file.seek(0)
                msvcrt.locking(lock_file.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: separate opens exclude each other, threads too
            yield
        finally:
            os.close(fd)  # releases the lock


def _fsync_folder(folder: Path) -> None:
    """Make the new directory entry durable (POSIX); the file itself is already on disk."""
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the image is already in place
        pass
    finally:
        os.close(fd)
