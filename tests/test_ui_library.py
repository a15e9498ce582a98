"""The Models tab's library panel without a browser: the grid (filters, the card cap, escaping, no server
paths), the editor's load and save (admins only when there are logins), Fetch info's refusal and
messages, and the embeddings' prompt cards."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from webui.api.services import ServerOptions, Services
from webui.core.config import AppConfig
from webui.core.library.cards import CardLibrary
from webui.core.networks.tiny import write_header_only
from webui.ui import library_panel as panel
from webui.ui.lora_browser import ThumbCache

XSS = "<img src=x onerror=alert(1)>"
LOGINS = ServerOptions(users={"alice": "a", "root": "r"}, admins=frozenset({"root"}))


def _services(config: AppConfig, options: ServerOptions | None = None) -> Services:
    settings = SimpleNamespace(get=lambda key: None)
    return Services(config, None, None, None, settings, options or ServerOptions())  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> AppConfig:
    config = AppConfig.for_data_dir(tmp_path, hashing=False)
    lora = config.lora_dirs[0]
    for i in range(150):
        write_header_only(lora / f"style-{i:03d}.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    write_header_only(lora / "odd" / f"{XSS}.safetensors", {})
    (lora / "odd" / f"{XSS}.json").write_text(json.dumps({"description": XSS}))
    emb = config.embeddings_dir
    emb.mkdir(parents=True)
    (emb / "bad-hands.pt").write_bytes(b"x")
    (emb / "easy_neg.pt").write_bytes(b"x")
    return config


def _names(text: str) -> list[str]:
    return re.findall(r"data-name='([^']*)'", text)


def test_grid_filters_caps_and_escapes(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    text = panel.render(library, "", panel.ALL, panel.ALL, ThumbCache())
    assert len(_names(text)) == panel.MAX_CARDS and "153 model files, first 100 shown" in text
    assert str(config.data_dir) not in text
    only = panel.render(library, "style-14", "LoRA", "sdxl", ThumbCache())
    assert _names(only) == [f"style-{i}" for i in range(140, 150)]
    assert "LoRA · sdxl" in only and "data-card='lora/style-140.safetensors'" in only
    assert _names(panel.render(library, "", "Embedding", panel.ALL, ThumbCache())) == [
        "bad-hands",
        "easy_neg",
    ]
    odd = panel.render(library, "onerror", panel.ALL, panel.ALL, ThumbCache())  # found by its description
    assert "<img src=x" not in odd and "&lt;img src=x onerror=alert(1)&gt;" in odd
    assert "no model matches" in panel.render(library, "zzz", panel.ALL, panel.ALL, ThumbCache())


def test_editor_loads_and_saves_the_sidecar(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    services = _services(config)
    about, *values = panel.load_card(library, "lora/style-007.safetensors")
    assert "**style-007**" in about and "sdxl" in about and values == ["", "", None, "", "", ""]
    message = panel.save_card(
        library, services, None, "lora/style-007.safetensors", "Bold ink", "inky", 0.6, "", "SDXL", ""
    )
    assert message == "Saved style-007.json."
    stored = json.loads((config.lora_dirs[0] / "style-007.json").read_text())
    assert stored == {
        "description": "Bold ink",
        "activation text": "inky",
        "preferred weight": 0.6,
        "sd version": "SDXL",
    }
    assert panel.load_card(library, "lora/style-007.safetensors")[1:4] == ("Bold ink", "inky", 0.6)
    bad = panel.save_card(library, services, None, "lora/style-007.safetensors", "", "", 50, "", "", "")
    assert bad.startswith("Not saved: preferred weight")
    assert "No such card" in panel.load_card(library, "lora/../config.safetensors")[0]
    assert panel.load_card(library, "")[0] == ""


def test_only_admins_save_or_fetch_when_there_are_logins(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    services = _services(config, LOGINS)
    alice, root = SimpleNamespace(username="alice"), SimpleNamespace(username="root")
    refused = panel.save_card(
        library, services, alice, "lora/style-001.safetensors", "x", "", None, "", "", ""
    )
    assert refused.startswith("Not saved:") and "only an admin" in refused
    assert not (config.lora_dirs[0] / "style-001.json").exists()
    assert "only an admin" in panel.fetch_card(library, services, alice, "lora/style-001.safetensors")
    saved = panel.save_card(library, services, root, "lora/style-001.safetensors", "x", "", None, "", "", "")
    assert saved == "Saved style-001.json."


def test_fetch_info_says_why_nothing_was_fetched(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    services = _services(config)  # civitai.com is not reachable from the tests: the policy refuses it first
    services.config = AppConfig.for_data_dir(config.data_dir, hashing=False, civitai_url="http://127.0.0.1:9")
    text = panel.fetch_card(library, services, None, "lora/style-001.safetensors")
    assert text.startswith("Nothing fetched: civitai_url:") and "allow-list" in text
    assert "Nothing fetched: no lora file" in panel.fetch_card(
        library, services, None, "lora/nope.safetensors"
    )


def test_embeddings_as_prompt_cards(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    text = panel.embedding_cards(library, "", "txt2img", ThumbCache())
    assert "data-tab='txt2img'" in text and "data-tag='bad-hands'" in text and "data-tag='easy_neg'" in text
    assert "sf-lib-card" not in text  # a click fills the prompt, not the library's editor
    assert "no embedding matches" in panel.embedding_cards(library, "zzz", "img2img", ThumbCache())


def test_refresh_rescans_only_for_admins_when_there_are_logins(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    services = _services(config, LOGINS)
    assert library.find("embedding", "bad-hands.pt").size == 1
    (config.embeddings_dir / "bad-hands.pt").write_bytes(b"longer")  # in place: the folder is unchanged
    assert not panel.rescan_if_allowed(library, services, SimpleNamespace(username="alice"))
    assert library.find("embedding", "bad-hands.pt").size == 1
    assert panel.rescan_if_allowed(library, services, SimpleNamespace(username="root"))
    assert library.find("embedding", "bad-hands.pt").size == 6


def test_orders(config: AppConfig) -> None:
    library = CardLibrary.for_config(config)
    (config.embeddings_dir / "easy_neg.pt").write_bytes(b"x" * 10_000)  # the largest
    later = time.time_ns() + 10**12
    os.utime(config.embeddings_dir / "bad-hands.pt", ns=(later, later))  # the newest file
    library.refresh()
    assert _names(panel.render(library, "", panel.ALL, panel.ALL, ThumbCache(), "date"))[0] == "bad-hands"
    assert _names(panel.render(library, "", panel.ALL, panel.ALL, ThumbCache(), "size"))[0] == "easy_neg"
    by_name = _names(panel.render(library, "", "LoRA", panel.ALL, ThumbCache(), "name"))
    assert by_name[:2] == ["&lt;img src=x onerror=alert(1)&gt;", "style-000"] and by_name[-1] == "style-098"
    with pytest.raises(ValueError, match="unknown sort"):
        library.search(sort="random")


def test_the_editor_header_shows_training_tags_escaped(config: AppConfig) -> None:
    tags = json.dumps({"1_x": {XSS: 4, "ink": 2}})
    write_header_only(config.lora_dirs[0] / "tagged.safetensors", {"ss_tag_frequency": tags})
    about = panel.load_card(CardLibrary.for_config(config), "lora/tagged.safetensors")[0]
    assert "Training tags: &lt;img src=x onerror=alert(1)&gt; (4), ink (2)" in about


def test_sizes_for_people() -> None:
    assert [panel.human_size(n) for n in (80, 12_600, 151_000_000, 2_040_109_466)] == [
        "80 B", "12.3 KiB", "144.0 MiB", "1.9 GiB",
    ]  # fmt: skip
