"""The download's sha256 runs on its own thread: same digest as in line, and it never outlives the block."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from webui.core.downloads.hashing import DEPTH, hashed_in_background


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "download-sha256"]


def test_the_digest_equals_hashing_in_line_in_the_same_order() -> None:
    chunks = [os.urandom(n) for n in (1, 4096, 1 << 20, 17, 300_000)] * (DEPTH + 1)  # more than the queue
    hasher = hashlib.sha256(b"already on disk")  # a resumed download starts from a hash of its part
    with hashed_in_background(hasher) as feed:
        for chunk in chunks:
            feed(chunk)
    assert hasher.hexdigest() == hashlib.sha256(b"already on disk" + b"".join(chunks)).hexdigest()
    assert not _hash_threads()


def test_an_error_in_the_block_still_ends_the_thread_with_every_chunk_hashed() -> None:
    hasher = hashlib.sha256()
    with pytest.raises(OSError, match="disk full"), hashed_in_background(hasher) as feed:
        feed(b"abc")
        raise OSError("disk full")
    assert hasher.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    assert not _hash_threads()


class _Broken:
    def update(self, chunk: bytes) -> None:
        raise ValueError("hasher broke")


def test_a_failing_hasher_reaches_the_feeding_thread_without_a_hang() -> None:
    with pytest.raises(ValueError, match="hasher broke"), hashed_in_background(_Broken()) as feed:
        for _ in range(DEPTH * 4):  # more than the queue holds: the worker drains it after failing
            feed(b"x" * 1024)
    assert not _hash_threads()
