"""The LoRA browser's cards without a browser: 10,000 files render at most MAX_CARDS cards and read only
the shown files' headers; search; tags; thumbnails; escaping."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from webui.core.networks.registry import LoraFile, LoraLibrary
from webui.core.networks.tiny import write_header_only
from webui.ui.lora_browser import MAX_CARDS, ThumbCache, matching, render

XSS = "<img src=x onerror=alert(1)>"


class CountingLibrary(LoraLibrary):
    """The real library, counting header reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    def metadata(self, item: LoraFile) -> dict[str, Any]:
        self.reads.append(item.name)
        return super().metadata(item)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loras") / "Lora"
    for i in range(10_000):
        sub = root / f"set{i % 10}"
        write_header_only(sub / f"item-{i:05d}.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    return root


def _cards(text: str) -> list[str]:
    return re.findall(r"data-name='([^']*)'", text)


def test_ten_thousand_files_render_a_capped_grid_reading_only_the_shown_headers(
    big: Path, tmp_path: Path
) -> None:
    library = CountingLibrary([big], tmp_path / "hashes.sqlite")
    text = render(library, "", "txt2img", ThumbCache())
    assert len(_cards(text)) == MAX_CARDS
    assert f"10000 LoRAs, first {MAX_CARDS} shown" in text
    assert len(library.reads) == MAX_CARDS  # base model of the drawn cards only
    assert "sdxl" in text and "data-tab='txt2img'" in text
    library.reads.clear()
    text = render(library, "item-0420", "img2img", ThumbCache())
    assert _cards(text) == ["item-04200", "item-04201", "item-04202", "item-04203", "item-04204",
                            "item-04205", "item-04206", "item-04207", "item-04208", "item-04209"]  # fmt: skip
    assert "10 LoRAs" in text and len(library.reads) == 10
    assert [f.name for f in matching(library, "SET4/ITEM-00003")] == []
    assert [f.name for f in matching(library, "SET3/ITEM-0001")] == ["item-00013"]
    assert "no LoRA matches" in render(library, "nothing like this", "txt2img", ThumbCache())


def test_cards_carry_the_tag_with_the_sidecar_weight_and_escape_names(tmp_path: Path) -> None:
    root = tmp_path / "Lora"
    write_header_only(
        root / f"{XSS}.safetensors", {"ss_output_name": "evil", "ss_base_model_version": "sd_v1"}
    )
    write_header_only(root / "weighted.safetensors", {})
    (root / "weighted.json").write_text(json.dumps({"preferred weight": 0.6, "activation text": "inky"}))
    Image.new("RGB", (400, 300), "green").save(root / "weighted.preview.png")
    library = LoraLibrary([root], tmp_path / "hashes.sqlite")
    thumbs = ThumbCache()
    text = render(library, "", "txt2img", thumbs)
    assert XSS not in text and html.escape(XSS) in text
    tags = {
        html.unescape(n): html.unescape(t)
        for t, n in re.findall(r"data-tag='([^']*)' data-name='([^']*)'", text)
    }
    assert tags == {XSS: f"<lora:{XSS}:1>", "weighted": "<lora:weighted:0.6> inky"}
    assert "sd1" in text and "base model unknown" in text
    uri = re.search(r"src='(data:image/jpeg;base64,[^']+)'", text)
    assert uri is not None and text.count("data:image/jpeg") == 1
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(uri.group(1).split(",", 1)[1]))) as thumb:
        assert max(thumb.size) == 128 and thumb.getpixel((5, 5))[1] > 100
    assert thumbs.uri(root / "weighted.preview.png") == uri.group(1)  # cached
    assert thumbs.uri(root / "missing.png") is None


def test_an_empty_library_says_where_it_looked(tmp_path: Path) -> None:
    library = LoraLibrary([tmp_path / "Lora"], tmp_path / "hashes.sqlite")
    text = render(library, "", "txt2img", ThumbCache())
    assert "no LoRA files found in" in text and str(tmp_path / "Lora") in text
