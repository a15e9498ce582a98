"""The model library's cards without a server: every kind folder listed, base models from headers and
sidecars, previews, sidecar notes written atomically with unknown keys kept, search by words, kind and
base, and names that try to leave the model folders refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from webui.core.config import AppConfig
from webui.core.library import actions
from webui.core.library.cards import CardLibrary, kind_folders, normal_base
from webui.core.library.sidecar import clean_values, read_sidecar, write_sidecar
from webui.core.models.hashes import HashCache
from webui.core.networks.tiny import write_header_only
from webui.core.types import RequestError


def _embedding(path: Path, width: int) -> None:
    header = json.dumps({"emb_params": {"dtype": "F32", "shape": [2, width], "data_offsets": [0, 8 * width]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(8 * width))


@pytest.fixture
def data(tmp_path: Path) -> AppConfig:
    config = AppConfig.for_data_dir(tmp_path)
    lora = config.lora_dirs[0]
    write_header_only(lora / "ink.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    write_header_only(lora / "styles" / "watercolor.safetensors", {"ss_base_model_version": "sd_v1"})
    (lora / "styles" / "watercolor.preview.png").write_bytes(b"\x89PNG fake")
    (lora / "styles" / "watercolor.json").write_text(
        json.dumps({"activation text": "wtrclr style", "description": "Soft paper", "x-tool": {"keep": 1}})
    )
    (lora / "notes.txt").write_text("not a model")
    _embedding(config.embeddings_dir / "bad-hands.safetensors", 768)
    vae = config.vae_dirs[0]
    vae.mkdir(parents=True)
    (vae / "clear.pt").write_bytes(b"x" * 10)
    (vae / "clear.png").write_bytes(b"\x89PNG fake")
    up = config.models_dir / "ESRGAN"
    up.mkdir(parents=True)
    (up / "4x-Ultra.pth").write_bytes(b"y" * 20)
    cn = config.models_dir / "ControlNet"
    cn.mkdir(parents=True)
    (cn / "canny.safetensors").write_bytes(b"\x00" * 8)  # a broken header: still listed, base unknown
    return config


def test_every_kind_is_listed_with_its_previews_and_sidecars(data: AppConfig) -> None:
    library = CardLibrary.for_config(data)
    cards = {c.key: c for c in library.cards()}
    assert set(cards) == {
        ("lora", "ink.safetensors"),
        ("lora", "styles/watercolor.safetensors"),
        ("embedding", "bad-hands.safetensors"),
        ("vae", "clear.pt"),
        ("upscaler", "4x-Ultra.pth"),
        ("controlnet", "canny.safetensors"),
    }
    water = cards[("lora", "styles/watercolor.safetensors")]
    assert water.name == "watercolor" and water.base == "sd1"
    assert water.preview is not None and water.preview.name == "watercolor.preview.png"
    assert water.user["activation text"] == "wtrclr style" and water.user["preferred weight"] is None
    assert cards[("lora", "ink.safetensors")].base == "sdxl"
    assert cards[("embedding", "bad-hands.safetensors")].base == "sd1"  # 768 wide
    assert cards[("vae", "clear.pt")].preview is not None  # A1111's name.png
    assert cards[("controlnet", "canny.safetensors")].base is None
    assert cards[("vae", "clear.pt")].size == 10
    as_json = water.to_json()
    assert as_json["kind"] == "lora" and as_json["has_preview"] and "path" not in as_json


def test_short_hash_only_when_cached_and_current(data: AppConfig) -> None:
    file = data.vae_dirs[0] / "clear.pt"
    HashCache(data.cache_dir / "hashes.sqlite").hash(file)
    library = CardLibrary.for_config(data)
    assert (
        library.find("vae", "clear.pt").shorthash
        == HashCache(data.cache_dir / "hashes.sqlite").get(file)[:10]
    )
    assert library.find("upscaler", "4x-Ultra.pth").shorthash is None  # a scan hashes nothing
    file.write_bytes(b"changed!!!!")
    library.refresh()
    assert library.find("vae", "clear.pt").shorthash is None


def test_search_by_words_kind_and_base(data: AppConfig) -> None:
    library = CardLibrary.for_config(data)
    assert [c.name for c in library.search("WTRCLR")] == ["watercolor"]  # the activation text
    assert [c.name for c in library.search("soft styles")] == ["watercolor"]  # every word, any field
    assert library.search("soft nothing") == []
    assert [c.name for c in library.search(kind="lora")] == ["ink", "watercolor"]
    assert [c.name for c in library.search(base="SDXL 1.0")] == ["ink"]
    assert sorted(c.name for c in library.search(base="sd1")) == ["bad-hands", "watercolor"]
    assert [c.name for c in library.search("ultra", kind="upscaler")] == ["4x-Ultra"]
    assert library.counts()["lora"] == 2


def test_the_sidecar_is_written_atomically_and_keeps_other_keys(data: AppConfig) -> None:
    library = CardLibrary.for_config(data)
    card = actions.save_user_metadata(
        library, "lora", "styles/watercolor.safetensors",
        {"description": "Wet paper", "preferred weight": 0.7, "notes": ""},
    )  # fmt: skip
    path = data.lora_dirs[0] / "styles" / "watercolor.json"
    stored = json.loads(path.read_text())
    assert stored == {"activation text": "wtrclr style", "description": "Wet paper", "x-tool": {"keep": 1},
                      "preferred weight": 0.7}  # fmt: skip
    assert card.user["description"] == "Wet paper" and card.user["preferred weight"] == 0.7
    assert library.search("wet")[0].name == "watercolor"  # the fresh card is searchable at once
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    made = actions.save_user_metadata(library, "vae", "clear.pt", {"activation text": "a, b"})
    assert read_sidecar(data.vae_dirs[0] / "clear.json") == {"activation text": "a, b"}
    assert made.sidecar == data.vae_dirs[0] / "clear.json"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"preferred weight": float("nan")}, "preferred weight"),
        ({"preferred weight": 11}, "preferred weight"),
        ({"preferred weight": "1"}, "preferred weight"),
        ({"description": 5}, "description"),
        ({"description": "x" * 20_001}, "description"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_bad_sidecar_values_name_their_field(values: dict, field: str, tmp_path: Path) -> None:
    with pytest.raises(RequestError) as e:
        clean_values(values)
    assert e.value.field == field
    with pytest.raises(RequestError):
        write_sidecar(tmp_path / "m.json", values)
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "file",
    [
        "../ink.safetensors",
        "styles/../ink.safetensors",
        "/etc/passwd",
        "..\\x",
        "C:/x",
        "",
        "a//b",
        "./ink.safetensors",
    ],
)
def test_names_that_leave_the_folder_are_refused(data: AppConfig, file: str) -> None:
    library = CardLibrary.for_config(data)
    with pytest.raises(RequestError) as e:
        actions.save_user_metadata(library, "lora", file, {"notes": "x"})
    assert e.value.field == "file"


def test_unknown_kind_and_unlisted_files(data: AppConfig) -> None:
    library = CardLibrary.for_config(data)
    with pytest.raises(RequestError) as e:
        actions.card_of(library, "hypernetwork", "ink.safetensors")
    assert e.value.field == "kind"
    with pytest.raises(actions.CardNotFound):
        actions.card_of(library, "lora", "notes.txt")  # in the folder, but not a model
    with pytest.raises(actions.CardNotFound):
        actions.card_of(library, "vae", "ink.safetensors")  # another kind's file


def test_preview_served_only_from_inside_the_folder(data: AppConfig, tmp_path: Path) -> None:
    library = CardLibrary.for_config(data)
    assert (
        actions.preview_of(library, "lora", "styles/watercolor.safetensors").name == "watercolor.preview.png"
    )
    with pytest.raises(actions.CardNotFound):
        actions.preview_of(library, "lora", "ink.safetensors")  # has none
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private")
    os.symlink(secret, data.lora_dirs[0] / "ink.preview.png")
    library.refresh()
    with pytest.raises(actions.CardNotFound):
        actions.preview_of(library, "lora", "ink.safetensors")


def test_rescan_reads_no_header_of_an_unchanged_file(
    data: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = CardLibrary.for_config(data)
    library.cards()
    reads: list[Path] = []
    import webui.core.library.cards as cards_module

    real = cards_module.header_base
    monkeypatch.setattr(
        cards_module, "header_base", lambda kind, path: reads.append(path) or real(kind, path)
    )
    library.refresh()
    assert reads == []
    write_header_only(data.lora_dirs[0] / "new.safetensors", {"ss_base_model_version": "flux1"})
    library.refresh()
    assert [p.name for p in reads] == ["new.safetensors"]
    assert library.find("lora", "new.safetensors").base == "flux"


def test_a_sidecar_sd_version_wins_and_bases_are_normalised(data: AppConfig) -> None:
    library = CardLibrary.for_config(data)
    card = actions.save_user_metadata(library, "lora", "ink.safetensors", {"sd version": "SD2"})
    assert card.base == "sd2"
    assert [normal_base(t) for t in ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D", "SD 3.5", "Unknown", "")] == [
        "sd1", "sdxl", "sdxl", "flux", "sd3", None, None,
    ]  # fmt: skip


def test_missing_folders_are_normal_and_a_file_in_place_of_a_folder_is_reported(tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tmp_path)
    folders = kind_folders(config)
    (tmp_path / "embeddings").write_text("oops")
    library = CardLibrary(folders, None)
    assert library.cards() == ()
    assert len(library.problems) == 1 and "Embedding folder" in library.problems[0]


def test_a_changed_folder_is_rescanned_on_the_next_look_and_a_save_is_not_a_rescan(
    data: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = CardLibrary.for_config(data)
    assert library.find("lora", "late.safetensors") is None
    write_header_only(data.lora_dirs[0] / "sub" / "late.safetensors", {})  # a new subfolder too
    assert library.find("lora", "sub/late.safetensors") is not None
    (data.lora_dirs[0] / "ink.safetensors").unlink()
    assert [c.name for c in library.search(kind="lora")] == ["watercolor", "late"]  # folder by folder
    scans: list[int] = []
    real = library.refresh
    monkeypatch.setattr(library, "refresh", lambda: scans.append(1) or real())
    actions.save_user_metadata(library, "lora", "styles/watercolor.safetensors", {"notes": "n"})
    assert library.find("lora", "styles/watercolor.safetensors").user["notes"] == "n"
    assert scans == []
    assert not library.changed()


def test_header_metadata_and_training_tags(data: AppConfig) -> None:
    freq = {"10_ink": {"ink": 12, "lines": 3, " ": 9}, "5_pen": {"ink": 2, "pen": 5, "bad": "x"}}
    write_header_only(data.lora_dirs[0] / "tagged.safetensors", {"ss_tag_frequency": json.dumps(freq)})
    library = CardLibrary.for_config(data)
    meta = actions.header_metadata(library.find("lora", "tagged.safetensors"))
    assert meta["ss_tag_frequency"] == freq  # decoded, as /sdapi/v1/loras gives it
    assert actions.training_tags(meta) == [("ink", 14), ("pen", 5), ("lines", 3)]
    assert actions.training_tags(meta, limit=1) == [("ink", 14)]
    assert actions.header_metadata(library.find("vae", "clear.pt")) == {}
    assert actions.header_metadata(library.find("controlnet", "canny.safetensors")) == {}  # broken header


def test_a_broken_sidecar_is_never_overwritten(data: AppConfig) -> None:
    broken = data.lora_dirs[0] / "ink.json"
    broken.write_text('{"description": "half writ')
    library = CardLibrary.for_config(data)
    assert library.find("lora", "ink.safetensors").user["description"] == ""  # read as empty
    with pytest.raises(RequestError, match="ink.json is not a JSON object"):
        actions.save_user_metadata(library, "lora", "ink.safetensors", {"notes": "x"})
    assert broken.read_text() == '{"description": "half writ'


def test_a_diffusers_folder_is_one_checkpoint_card_and_its_components_are_not_cards(tmp_path: Path) -> None:
    from webui.core.models.tiny import build_tiny, save_diffusers

    config = AppConfig.for_data_dir(tmp_path)
    root = config.ckpt_dirs[0]
    folder = save_diffusers(build_tiny("sdxl", seed=2), root / "styles" / "tiny-xl.v1")
    (root / "styles" / "tiny-xl.v1.preview.png").write_bytes(b"\x89PNG fake")
    (root / "styles" / "tiny-xl.v1.json").write_text(json.dumps({"activation text": "xlword"}))
    library = CardLibrary.for_config(config)
    cards = library.search(kind="checkpoint")
    assert [c.file for c in cards] == ["styles/tiny-xl.v1"]  # no unet/ or vae/ weights as cards
    card = cards[0]
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert (card.name, card.is_folder, card.size, card.base) == ("tiny-xl.v1", True, on_disk, "sdxl")
    assert card.shorthash is None  # a folder has no single-file hash
    assert card.preview is not None and card.user["activation text"] == "xlword"
    assert card.to_json()["format"] == "diffusers folder"
    assert library.search("xlword", base="sdxl") == [card]
    saved = actions.save_user_metadata(library, "checkpoint", card.file, {"notes": "from the hub"})
    assert saved.is_folder and read_sidecar(root / "styles" / "tiny-xl.v1.json")["notes"] == "from the hub"
    with pytest.raises(RequestError, match="diffusers folder") as e:
        actions.fetch_info(library, "checkpoint", card.file, config, None)
    assert e.value.field == "file"
