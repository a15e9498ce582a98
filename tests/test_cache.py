"""The model cache: byte budget, LRU order, pinning, one load per key, failed loads leave no trace."""

from __future__ import annotations

import threading
import time

import pytest

from webui.core.models.cache import ModelCache


def _loader(name: str, size: int, calls: list[str]):  # type: ignore[no-untyped-def]
    def load() -> tuple[str, int]:
        calls.append(name)
        return name, size

    return load


def test_hit_does_not_reload_and_lru_evicts_oldest() -> None:
    cache: ModelCache[str] = ModelCache(budget_bytes=200)
    calls: list[str] = []
    for name in ("a", "b", "a", "c"):
        with cache.use(name, _loader(name, 100, calls)) as v:
            assert v == name
    assert calls == ["a", "b", "c"]
    assert cache.lru_keys() == ["a", "c"]  # b was least recently used
    assert cache.used_bytes == 200


def test_pinned_entry_survives_eviction() -> None:
    cache: ModelCache[str] = ModelCache(budget_bytes=100)
    calls: list[str] = []
    with cache.use("a", _loader("a", 100, calls)):
        with cache.use("b", _loader("b", 100, calls)):
            assert "a" in cache and "b" in cache
        assert "a" in cache  # still pinned by the outer block
    assert cache.lru_keys() == ["a"]  # b was evicted when released: a was pinned
    assert cache.used_bytes <= 100


def test_failed_load_leaves_cache_unchanged() -> None:
    cache: ModelCache[str] = ModelCache(budget_bytes=1000)
    with cache.use("good", _loader("good", 10, [])):
        pass

    def bad() -> tuple[str, int]:
        raise RuntimeError("corrupt")

    with pytest.raises(RuntimeError), cache.use("bad", bad):
        pass
    assert cache.lru_keys() == ["good"]


def test_concurrent_misses_load_once() -> None:
    cache: ModelCache[str] = ModelCache(budget_bytes=1000)
    calls: list[str] = []

    def slow() -> tuple[str, int]:
        calls.append("x")
        time.sleep(0.2)
        return "x", 1

    def worker() -> None:
        with cache.use("x", slow):
            pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["x"]


def test_zero_budget_keeps_nothing_after_use() -> None:
    cache: ModelCache[str] = ModelCache(budget_bytes=0)
    with cache.use("a", _loader("a", 5, [])) as v:
        assert v == "a" and "a" in cache
    assert cache.lru_keys() == []
