"""Error text a client sees names fields and files, never heap addresses or this machine's absolute
paths; passwords can come from the environment instead of the command line (issue 22 item 23)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.test_server_harness import running_server
from webui.api.redact import public_text
from webui.flags import build_parser

FAST = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}


def test_public_text_drops_addresses_and_shortens_paths_of_this_machine(tmp_path: Path) -> None:
    said = public_text(
        f"cannot read <_io.BytesIO object at 0x7f3a2b1c4d50> or {tmp_path}/models/x y.ckpt here"
    )
    assert said == "cannot read <_io.BytesIO> or x y.ckpt here"
    kept = "see GET /sdapi/v1/scripts or http://127.0.0.1:7860/docs"  # URL paths are not files
    assert public_text(kept) == kept


def test_errors_carry_no_heap_address_and_no_absolute_path(tiny_data_dir: Path, tmp_path: Path) -> None:
    not_image = base64.b64encode(b"this is not an image at all" * 4).decode()
    with running_server(tiny_data_dir, tmp_path) as srv, srv.client() as c:
        r = c.post("/sdapi/v1/img2img", json={**FAST, "init_images": [not_image]})
        assert r.status_code == 422 and r.json()["field"] == "init_images.0", r.text
        assert "0x" not in r.text and "object at" not in r.text
    empty = tmp_path / "empty"
    (empty / "models" / "Stable-diffusion").mkdir(parents=True)
    with running_server(empty, tmp_path / "srv2") as srv, srv.client() as c:
        r = c.post("/api/v1/jobs", json={"request": FAST})
        assert r.status_code == 422 and r.json()["field"] == "checkpoint", r.text
        assert "no checkpoints found" in r.text and "Stable-diffusion" in r.text
        assert str(tmp_path) not in r.text


def test_passwords_from_the_environment(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helptext = build_parser().format_help()
    assert "SFUMATO_AUTH" in helptext and "process list" in helptext
    monkeypatch.setenv("SFUMATO_AUTH", "eve:pw-from-env")
    with running_server(tiny_data_dir, tmp_path, auth_delay=0) as srv, srv.client() as c:
        assert c.get("/sdapi/v1/options").status_code == 401
        assert c.get("/sdapi/v1/options", auth=("eve", "pw-from-env")).status_code == 200
        flags = c.get("/sdapi/v1/cmd-flags", auth=("eve", "pw-from-env")).text
        assert "pw-from-env" not in flags
