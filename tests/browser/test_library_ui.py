"""The Models tab's model library in a real browser: search narrows the cards, a click opens a card's
notes, Save writes the A1111 sidecar `name.json` beside the model; Fetch info (against a Civitai-style
server on 127.0.0.1) shows each stage as it runs and then saves the preview; an embedding card in
txt2img puts its name into the prompt and a second click takes it out."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import RunningStudio, open_studio, running_studio, sd1_data_dir, wait_value
from tests.download_server import Served, json_page, serving
from webui.core.networks.tiny import write_header_only

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


@pytest.fixture(scope="module")
def civitai() -> Iterator[Served]:
    with serving() as served:
        yield served


@pytest.fixture(scope="module")
def studio(
    tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, civitai: Served
) -> Iterator[RunningStudio]:
    data = sd1_data_dir(tiny_files, tmp_path_factory.mktemp("library-data"))
    lora = data / "models" / "Lora"
    for name in ("ink-wash", "ink-pen", "watercolor"):
        write_header_only(lora / f"{name}.safetensors", {"ss_base_model_version": "sd_v1"})
    (lora / "watercolor.json").write_text(json.dumps({"activation text": "wtrclr", "x-other-tool": 1}))
    (data / "embeddings").mkdir()
    (data / "embeddings" / "bad-hands.pt").write_bytes(b"x")
    flags = ["--civitai-url", civitai.base, "--download-hosts", "127.0.0.1"]
    with running_studio(data, tmp_path_factory.mktemp("library-studio"), flags=flags) as srv:
        yield srv


def _cards(page: Any) -> list[str]:
    return page.eval_on_selector_all("#library_cards .sf-lib-card", "els => els.map(e => e.dataset.name)")


def test_search_edit_and_save_a_sidecar(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Models')")
    page.wait_for_selector("#library_cards .sf-lib-card[data-name='watercolor']")
    page.fill("#library_search textarea, #library_search input", "wtrclr")  # the sidecar's trigger word
    page.wait_for_function("document.querySelectorAll('#library_cards .sf-lib-card').length === 1")
    assert _cards(page) == ["watercolor"]
    page.fill("#library_search textarea, #library_search input", "ink")
    page.wait_for_function("document.querySelectorAll('#library_cards .sf-lib-card').length === 2")
    assert _cards(page) == ["ink-pen", "ink-wash"]
    page.click("#library_cards .sf-lib-card[data-name='ink-wash']")
    wait_value(page, "#library_selected", "lora/ink-wash.safetensors", exact=True)
    page.wait_for_selector("#library_about:has-text('ink-wash')")
    page.fill("#library_description textarea", "Grey washes <b>not bold</b>")
    page.fill("#library_activation textarea, #library_activation input", "inkwash style")
    page.click("#library_save")
    page.wait_for_selector("#library_status:has-text('Saved ink-wash.json')")
    stored = json.loads((studio.config.lora_dirs[0] / "ink-wash.json").read_text())
    assert stored == {"description": "Grey washes <b>not bold</b>", "activation text": "inkwash style"}
    page.fill("#library_search textarea, #library_search input", "inkwash")  # searchable at once
    page.wait_for_function("document.querySelectorAll('#library_cards .sf-lib-card').length === 1")
    assert _cards(page) == ["ink-wash"]


def test_an_embedding_card_toggles_its_name_in_the_prompt(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.click("#txt2img_embeddings .label-wrap")
    card = "#txt2img_embedding_cards .sf-lora-card[data-tag='bad-hands']"
    page.wait_for_selector(card, state="visible")
    page.fill("#txt2img_prompt textarea", "a cat")
    page.click(card)
    wait_value(page, "#txt2img_prompt", "a cat bad-hands", exact=True)
    page.click(card)
    wait_value(page, "#txt2img_prompt", "a cat", exact=True)


def test_fetch_info_shows_its_stages_then_saves_the_preview(
    studio: RunningStudio, civitai: Served, browser: Any
) -> None:
    lora = studio.config.lora_dirs[0] / "ink-pen.safetensors"
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    version = {"id": 7, "modelId": 8, "name": "v1", "baseModel": "SD 1.5", "trainedWords": ["inkpen"],
               "model": {"name": "Pen Master", "type": "LORA"},
               "images": [{"url": f"{civitai.base}/img/pen.png", "type": "image"}]}  # fmt: skip
    civitai.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(version)
    noise = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)  # > 64 KiB as PNG
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    civitai.files["/img/pen.png"] = buf.getvalue()
    civitai.slow["/img/pen.png"] = 3.0  # a slow picture: its stage stays on screen for seconds
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Models')")
    page.click("#library_cards .sf-lib-card[data-name='ink-pen']")
    wait_value(page, "#library_selected", "lora/ink-pen.safetensors", exact=True)
    page.click("#library_fetch")
    page.wait_for_selector("#library_status:has-text('Fetching the preview picture...')", timeout=60_000)
    page.wait_for_selector("#library_status:has-text('Found Pen Master (v1) on Civitai')", timeout=60_000)
    with Image.open(lora.with_name("ink-pen.preview.png")) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), noise)
    stored = json.loads(lora.with_name("ink-pen.json").read_text())
    assert stored["activation text"] == "inkpen"
