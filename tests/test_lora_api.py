"""/sdapi/v1/loras and /sdapi/v1/refresh-loras over HTTP, in A1111's shapes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.test_server_harness import running_server
from webui.core.models.components import Precision
from webui.core.models.loader import load_model
from webui.core.networks.tiny import write_header_only, write_tiny_lora


def test_loras_listing_and_refresh(tiny_files: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    os.symlink(tiny_files["sd1"], data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    loras = data / "models" / "Lora"
    write_tiny_lora(loras / "detail.safetensors", load_model(tiny_files["sd1"], Precision()))
    freq = {"10_x": {"cat": 2}}
    write_header_only(
        loras / "styles" / "Ink.safetensors",
        {"ss_output_name": "ink_v2", "ss_tag_frequency": json.dumps(freq)},
    )
    with running_server(data, tmp_path / "srv") as srv, srv.client() as c:
        body = c.get("/sdapi/v1/loras").json()
        assert [(e["name"], e["alias"]) for e in body] == [("detail", "detail"), ("Ink", "ink_v2")]
        assert body[1]["path"] == str(loras / "styles" / "Ink.safetensors")
        assert body[1]["metadata"] == {"ss_output_name": "ink_v2", "ss_tag_frequency": freq}
        assert body[0]["metadata"]["ss_network_dim"] == "2"
        write_header_only(data / "models" / "LyCORIS" / "late.safetensors", {})
        r = c.post("/sdapi/v1/refresh-loras")
        assert r.status_code == 200 and r.json() == {}
        names = [e["name"] for e in c.get("/sdapi/v1/loras").json()]
        assert names == ["detail", "Ink", "late"]
