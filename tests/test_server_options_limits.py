"""`POST /sdapi/v1/options` keeps keys Sfumato does not use (A1111 clients write them back), but only so
many and so large: past the cap, 422 naming the key, and config.json is left as it was."""

from __future__ import annotations

from pathlib import Path

from tests.test_server_harness import running_server
from webui.core.settings import MAX_UNKNOWN_BYTES, MAX_UNKNOWN_KEYS


def test_unknown_option_keys_are_capped_in_count_and_size(tiny_data_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_data_dir, tmp_path, flags=["--api"]) as srv, srv.client() as c:
        assert c.post("/sdapi/v1/options", json={"some_a1111_option": [1, 2]}).status_code == 200
        settings_file = srv.config.settings_path
        saved = settings_file.read_bytes()
        many = {f"extra_{n:05d}": n for n in range(MAX_UNKNOWN_KEYS + 10)}
        r = c.post("/sdapi/v1/options", json=many)
        assert r.status_code == 422, r.text
        # one key is already stored, so the cap is met one key earlier
        assert r.json()["field"] == f"extra_{MAX_UNKNOWN_KEYS - 1:05d}" and "too many unknown" in r.text
        big = {"huge_blob": "x" * (MAX_UNKNOWN_BYTES + 1)}
        r = c.post("/sdapi/v1/options", json=big)
        assert r.status_code == 422 and r.json()["field"] == "huge_blob" and "too large" in r.text
        for n in range(3):  # many requests do not add up past the cap either
            chunk = {f"blob_{n}": "y" * (MAX_UNKNOWN_BYTES // 2)}
            r = c.post("/sdapi/v1/options", json=chunk)
            assert r.status_code == (200 if n < 1 else 422), (n, r.text)
        assert r.json()["field"] == "blob_2" and "1048576 bytes" in r.text
        assert settings_file.stat().st_size < 2 * MAX_UNKNOWN_BYTES
        assert c.get("/sdapi/v1/options").json()["some_a1111_option"] == [1, 2]
        # known settings still change with the unknown ones at their cap
        assert c.post("/sdapi/v1/options", json={"samples_format": "jpg"}).status_code == 200
        assert saved != settings_file.read_bytes()
