"""Per-user queue quota on a real server: one user filling the queue gets 429 naming the limit, while
another user still gets in (the 200-job limit is for everyone together)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_server_harness import running_server
from webui.flags import FlagError, parse_flags
from webui.server import build_options

LONG = {"prompt": "long", "steps": 500, "width": 64, "height": 64, "n_iter": 20, "seed": 1}


def test_one_user_cannot_lock_the_others_out(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--api", "--api-auth", "alice:pa,bob:pb", "--max-queued-per-user", "3"]
    with running_server(tiny_data_dir, tmp_path, flags=flags) as srv:
        queue = srv.services.queue
        ids: list[str] = []
        try:
            with srv.client(auth=("alice", "pa")) as alice, srv.client(auth=("bob", "pb")) as bob:
                refused = None
                for _ in range(6):  # the first may start running at once: 3 or 4 get in
                    r = alice.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG})
                    if r.status_code != 201:
                        refused = r
                        break
                    ids.append(r.json()["id"])
                assert refused is not None and refused.status_code == 429, refused
                assert "limit 3 per user" in refused.json()["detail"]
                assert "--max-queued-per-user" in refused.json()["detail"]
                assert 3 <= len(ids) <= 4
                blocking = alice.post("/sdapi/v1/txt2img", json=LONG)  # the A1111 route too
                assert blocking.status_code == 429 and "per user" in blocking.text
                r = bob.post("/api/v1/jobs", json={"kind": "txt2img", "request": LONG})
                assert r.status_code == 201, r.text  # bob is not locked out
                ids.append(r.json()["id"])
        finally:
            for job_id in ids:
                queue.cancel(job_id, by="test", admin=True)


def test_the_quota_flag() -> None:
    assert build_options(parse_flags([])).max_queued_per_user == 50
    assert build_options(parse_flags(["--max-queued-per-user", "0"])).max_queued_per_user == 0
    with pytest.raises(FlagError, match="--max-queued-per-user"):
        parse_flags(["--max-queued-per-user", "-1"])
