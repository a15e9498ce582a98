""" "Fetch info" against a Civitai-style server on 127.0.0.1: the file's sha256 is looked up by hash, the
first picture saved as `name.preview.png` (re-encoded), the empty sidecar keys filled and the user's
kept; a 404, a host off the allow-list, a picture that is a web page and a redirect to another host
write nothing they should not."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.download_server import Served, json_page, serving
from webui.core.config import AppConfig
from webui.core.library import actions, civitai
from webui.core.library.cards import CardLibrary
from webui.core.networks.tiny import write_header_only
from webui.core.types import RequestError


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, "PNG")
    return buf.getvalue()


def _version(base: str, image_path: str = "/img/1.png") -> dict:
    return {
        "id": 222,
        "modelId": 111,
        "name": "v2.0",
        "baseModel": "SDXL 1.0",
        "trainedWords": ["inkstyle", " bold lines "],
        "description": "<p>Ink <b>drawings</b> &amp; more</p><p>second</p>",
        "model": {"name": "Ink Master", "type": "LORA"},
        "images": [
            {"url": f"{base}/img/video.mp4", "type": "video"},
            {"url": f"{base}{image_path}", "type": "image"},
        ],
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AppConfig, Path, str]:
    config = AppConfig.for_data_dir(tmp_path, download_hosts=("127.0.0.1",))
    lora = write_header_only(config.lora_dirs[0] / "ink.safetensors", {"ss_output_name": "ink"})
    (lora.parent / "ink.json").write_text(json.dumps({"notes": "mine", "x": 1}))
    return config, lora, hashlib.sha256(lora.read_bytes()).hexdigest()


def _fetch(config: AppConfig, served: Served, **kw: object) -> actions.FetchResult:
    config = dataclasses.replace(config, civitai_url=served.base)
    return actions.fetch_info(CardLibrary.for_config(config), "lora", "ink.safetensors", config, None, **kw)


def test_fetch_info_saves_the_preview_and_fills_only_empty_keys(setup: tuple[AppConfig, Path, str]) -> None:
    config, lora, sha = setup
    with serving() as served:
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(_version(served.base))
        served.files["/img/1.png"] = _png((200, 10, 10))
        result = _fetch(config, served)
    assert [p for p, _ in served.seen] == [f"/api/v1/model-versions/by-hash/{sha}", "/img/1.png"]
    preview = lora.parent / "ink.preview.png"
    with Image.open(preview) as im:
        assert im.format == "PNG" and im.size == (8, 6) and im.getpixel((0, 0)) == (200, 10, 10)
    stored = json.loads((lora.parent / "ink.json").read_text())
    assert stored == {
        "notes": "mine",  # the user's words win
        "x": 1,
        "description": "Ink drawings & more\nsecond",
        "activation text": "inkstyle, bold lines",
        "sd version": "SDXL",
    }
    assert result.wrote_preview and result.sha256 == sha
    assert set(result.filled) == {"description", "activation text", "sd version"}
    assert result.card.preview == preview and result.card.base == "sdxl"
    assert result.card.shorthash == sha[:10]  # hashed for the look-up, so now known
    assert "Ink Master (v2.0)" in result.message()


def test_an_existing_preview_is_kept_unless_asked(setup: tuple[AppConfig, Path, str]) -> None:
    config, lora, sha = setup
    old = lora.parent / "ink.png"
    old.write_bytes(_png((1, 2, 3)))
    with serving() as served:
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(_version(served.base))
        served.files["/img/1.png"] = _png((9, 9, 9))
        kept = _fetch(config, served)
        assert not kept.wrote_preview and "/img/1.png" not in [p for p, _ in served.seen]
        replaced = _fetch(config, served, replace_preview=True)
    assert replaced.wrote_preview and replaced.card.preview == lora.parent / "ink.preview.png"
    assert old.read_bytes() == _png((1, 2, 3))


def test_a_file_civitai_does_not_know_writes_nothing(setup: tuple[AppConfig, Path, str]) -> None:
    config, lora, _ = setup
    before = sorted(p.name for p in lora.parent.iterdir())
    with serving() as served, pytest.raises(civitai.NotOnCivitai, match="knows no file"):
        _fetch(config, served)
    assert sorted(p.name for p in lora.parent.iterdir()) == before


def test_a_host_off_the_allow_list_is_refused_before_any_request(setup: tuple[AppConfig, Path, str]) -> None:
    config, lora, _ = setup
    config = dataclasses.replace(config, download_hosts=())
    with serving() as served, pytest.raises(RequestError) as e:
        _fetch(config, served)
    assert e.value.field == "civitai_url" and "not on the download allow-list" in e.value.message
    assert served.seen == []


def test_a_picture_that_is_a_web_page_or_redirects_away_saves_only_the_text(
    setup: tuple[AppConfig, Path, str],
) -> None:
    config, lora, sha = setup
    with serving() as served:
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(_version(served.base))
        served.pages["/img/1.png"] = ("text/html", b"<html><script>alert(1)</script></html>")
        first = _fetch(config, served)
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(_version(served.base, "/img/2.png"))
        served.redirects["/img/2.png"] = "http://localhost.invalid/x.png"
        second = _fetch(config, served)
    assert not first.wrote_preview and not second.wrote_preview
    assert "not a picture" in first.message()
    assert "localhost.invalid is not on the download allow-list" in second.message()
    assert not (lora.parent / "ink.preview.png").exists()
    assert json.loads((lora.parent / "ink.json").read_text())["activation text"] == "inkstyle, bold lines"


def test_an_answer_that_is_not_a_version_is_a_clear_error(setup: tuple[AppConfig, Path, str]) -> None:
    config, _, sha = setup
    with serving() as served:
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = ("text/html", b"<html>maintenance</html>")
        with pytest.raises(civitai.CivitaiError, match="not JSON"):
            _fetch(config, served)
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page({"error": "nope"})
        with pytest.raises(civitai.CivitaiError, match="not a model version"):
            _fetch(config, served)


def test_sidecar_values_and_page_url() -> None:
    info = civitai.parse_version(_version("http://x"))
    assert info.image_urls == ("http://x/img/1.png",)
    assert info.page_url("https://civitai.com/") == "https://civitai.com/models/111?modelVersionId=222"
    values = civitai.sidecar_values(info, {"description": "", "sd version": "SD1"}, "https://civitai.com")
    assert values["notes"] == "https://civitai.com/models/111?modelVersionId=222"
    assert "sd version" not in values


def test_the_civitai_url_flag() -> None:
    from webui.flags import FlagError, parse_flags

    config = AppConfig.from_flags(parse_flags(["--civitai-url", "http://127.0.0.1:8123/"]))
    assert config.civitai_url == "http://127.0.0.1:8123"
    assert AppConfig.from_flags(parse_flags([])).civitai_url == "https://civitai.com"
    for bad in ("ftp://mirror", "civitai.com", "https://x/?q=1", "http://"):
        with pytest.raises(FlagError, match="civitai-url"):
            parse_flags(["--civitai-url", bad])


def test_fetch_info_reports_each_stage_and_hashes_a_file_once(setup: tuple[AppConfig, Path, str]) -> None:
    config, lora, sha = setup
    steps: list[tuple[str, float | None]] = []
    with serving() as served:
        served.pages[f"/api/v1/model-versions/by-hash/{sha}"] = json_page(_version(served.base))
        served.files["/img/1.png"] = _png((10, 200, 10))
        _fetch(config, served, step=lambda what, fraction: steps.append((what, fraction)))
        hashing = [f for what, f in steps if what.startswith("Hashing ink.safetensors")]
        assert hashing[0] == 0.0 and hashing[-1] == 1.0 and hashing == sorted(hashing)
        stages = [what for what, _ in steps if not what.startswith("Hashing")]
        assert stages == [f"Asking Civitai about {sha[:10]}", "Fetching the preview picture"]
        steps.clear()
        _fetch(config, served, step=lambda what, fraction: steps.append((what, fraction)))
    assert [what for what, _ in steps] == [f"Asking Civitai about {sha[:10]}"]  # hash cached, preview kept
