"""EXIF UserComment: where JPEG and WebP files carry the infotext.

The EXIF block is built by hand: a big-endian TIFF header, IFD0 holding only the pointer to the Exif IFD,
and the Exif IFD holding only UserComment (type UNDEFINED). Nothing else is written, in particular never
the Model tag (0x0110), which one popular reader json-decodes and crashes on.
"""

from __future__ import annotations

import struct

from PIL import Image

EXIF_IFD_POINTER = 0x8769
USER_COMMENT = 0x9286
TIFF_LONG = 4
TIFF_UNDEFINED = 7
EXIF_HEADER = b"Exif\x00\x00"
JPEG_MAX_EXIF_BYTES = 65533  # one APP1 segment, "Exif\0\0" included

UNICODE_PREFIX = b"UNICODE\x00"
ASCII_PREFIX = b"ASCII\x00\x00\x00"
JIS_PREFIX = b"JIS\x00\x00\x00\x00\x00"
UNDEFINED_PREFIX = b"\x00" * 8

_IFD_SIZE = 2 + 12 + 4  # entry count, one 12-byte entry, next-IFD offset
_TIFF_HEADER_SIZE = 8


def encode_user_comment(text: str) -> bytes:
    """UserComment bytes in the "unicode" encoding: `UNICODE\\0` then UTF-16 big-endian, as piexif writes."""
    return UNICODE_PREFIX + text.encode("utf-16-be")


def decode_user_comment(raw: bytes) -> str:
    """Text of a UserComment in any of the EXIF character codes."""
    prefix, body = raw[:8], raw[8:]
    if prefix == UNICODE_PREFIX:
        return _decode_utf16(body)
    if prefix == ASCII_PREFIX:
        return body.rstrip(b"\x00").decode("latin-1")
    if prefix == JIS_PREFIX:
        return body.rstrip(b"\x00").decode("shift_jis", errors="replace")
    if prefix == UNDEFINED_PREFIX:
        return body.rstrip(b"\x00").decode("utf-8", errors="replace")
    return raw.rstrip(b"\x00").decode("utf-8", errors="replace")


def user_comment_exif(text: str) -> bytes:
    """A complete EXIF block ("Exif\\0\\0" + TIFF) holding only UserComment = text."""
    comment = encode_user_comment(text)
    exif_ifd_offset = _TIFF_HEADER_SIZE + _IFD_SIZE
    comment_offset = exif_ifd_offset + _IFD_SIZE
    tiff = b"MM\x00\x2a" + struct.pack(">I", _TIFF_HEADER_SIZE)
    tiff += _ifd(EXIF_IFD_POINTER, TIFF_LONG, 1, exif_ifd_offset)
    tiff += _ifd(USER_COMMENT, TIFF_UNDEFINED, len(comment), comment_offset)
    return EXIF_HEADER + tiff + comment


def read_user_comment(image: Image.Image) -> str | None:
    """The image's EXIF UserComment as text, or None when it has none."""
    try:
        value = image.getexif().get_ifd(EXIF_IFD_POINTER).get(USER_COMMENT)
    except (OSError, SyntaxError, ValueError, struct.error):  # malformed EXIF: as if absent
        return None
    if isinstance(value, bytes | bytearray):
        return decode_user_comment(bytes(value)) if value else None
    if isinstance(value, str):
        return value
    return None


def _ifd(tag: int, tiff_type: int, count: int, value_offset: int) -> bytes:
    return struct.pack(">HHHII", 1, tag, tiff_type, count, value_offset) + struct.pack(">I", 0)


def _decode_utf16(body: bytes) -> str:
    if body[:2] == b"\xfe\xff":
        return body[2:].decode("utf-16-be", errors="replace")
    if body[:2] == b"\xff\xfe":
        return body[2:].decode("utf-16-le", errors="replace")
    if len(body) % 2:
        body = body[:-1]
    # No byte-order mark: the standard (and piexif) say big-endian, but some Windows tools write
    # little-endian. For mostly-ASCII text the zero bytes give it away.
    zeros_even = body[0::2].count(0)
    zeros_odd = body[1::2].count(0)
    encoding = "utf-16-le" if zeros_odd > zeros_even else "utf-16-be"
    return body.decode(encoding, errors="replace").rstrip("\x00")
