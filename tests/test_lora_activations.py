"""`<lora:...>` tags -> networks and weights, `Lora hashes` in the infotext, and relinking pasted prompts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.core.networks.activations import (
    card_tag,
    lora_hashes,
    parse_lora_hashes,
    plan_networks,
    plan_prompt,
    relink_pasted_prompt,
    tag_weights,
)
from webui.core.networks.apply import AppliedInfo, AppliedNetwork
from webui.core.networks.registry import LoraLibrary
from webui.core.outputs.infotext import format_infotext, parse_infotext
from webui.core.prompts.syntax import ExtraNetwork
from webui.core.types import RequestError


def _lora(path: Path, seed: int, **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"lora_unet_x.lora_down.weight": torch.randn(2, 4, generator=g)}, str(path), metadata=metadata)
    return path


def _short(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


@pytest.fixture
def library(tmp_path: Path) -> LoraLibrary:
    root = tmp_path / "Lora"
    _lora(root / "add_detail.safetensors", 1)
    _lora(root / "styles" / "Ink.safetensors", 2, ss_output_name="ink_v2")
    return LoraLibrary([root, tmp_path / "LyCORIS"], tmp_path / "cache" / "hashes.sqlite")


@pytest.mark.parametrize(
    ("args", "te", "unet"),
    [
        ((), 1.0, 1.0),
        (("0.8",), 0.8, 0.8),
        (("0.5", "1.2"), 0.5, 1.2),
        (("-1",), -1.0, -1.0),
        (("te=0.25",), 0.25, 0.25),
        (("1", "unet=0"), 1.0, 0.0),
        (("0.5", "0.7", "te=0.1"), 0.1, 0.7),
        ((" 0.3 ",), 0.3, 0.3),
    ],
)
def test_tag_weights_follow_a1111(args: tuple[str, ...], te: float, unet: float) -> None:
    got_te, got_unet, notes = tag_weights(ExtraNetwork("lora", "x", args))
    assert (got_te, got_unet, notes) == (te, unet, [])


@pytest.mark.parametrize("bad", [("abc",), ("1", "x"), ("te=",), ("nan",), ("inf",)])
def test_a_weight_that_is_not_a_number_names_the_prompt(bad: tuple[str, ...]) -> None:
    with pytest.raises(RequestError) as e:
        tag_weights(ExtraNetwork("lora", "x", bad))
    assert e.value.field == "prompt" and "<lora:x:" in str(e.value)


def test_dynamic_rank_is_noted_and_ignored() -> None:
    te, unet, notes = tag_weights(ExtraNetwork("lora", "x", ("1", "0.5", "8")))
    assert (te, unet) == (1.0, 0.5) and "dyn" in notes[0]


def test_plan_resolves_names_aliases_kinds_and_reports_unknown(library: LoraLibrary) -> None:
    plan = plan_prompt(
        "a cat <lora:add_detail:0.8>, [<lyco:INK_V2:0.5:1>:x:3] AND <lora:missing> <hypernet:h:1> <lora:ink>",
        library,
    )
    assert [(a.network.name, a.te_weight, a.unet_weight, a.mentioned) for a in plan.activations] == [
        ("add_detail", 0.8, 0.8, "add_detail"),
        ("Ink", 0.5, 1.0, "INK_V2"),
        ("Ink", 1.0, 1.0, "ink"),
    ]
    assert plan.messages == ("LoRA 'missing' not found in the LoRA folders; skipped",)
    assert plan.networks[0] == (plan.activations[0].network, 0.8, 0.8)
    assert plan_networks([], library).activations == ()


def test_lora_hashes_value_and_infotext_round_trip(library: LoraLibrary, tmp_path: Path) -> None:
    plan = plan_prompt("<lora:add_detail:1> <lora:ink_v2:0.4> <lora:add_detail:0.2>", library)
    detail, ink = (
        tmp_path / "Lora" / "add_detail.safetensors",
        tmp_path / "Lora" / "styles" / "Ink.safetensors",
    )
    value = lora_hashes(plan, library)
    assert value == f"add_detail: {_short(detail)}, ink_v2: {_short(ink)}"
    text = format_infotext("a cat <lora:add_detail:1>", "", {"Steps": 2, "Seed": 1, "Lora hashes": value})
    assert f'Lora hashes: "{value}"' in text
    assert parse_infotext(text)["Lora hashes"] == value
    assert parse_lora_hashes(value) == {"add_detail": _short(detail), "ink_v2": _short(ink)}
    # only networks the job really applied are listed
    applied = AppliedInfo((AppliedNetwork("Ink", plan.activations[1].network.key, 0.4, 0.4, 3),), (), ())
    assert lora_hashes(plan, library, applied) == f"ink_v2: {_short(ink)}"
    assert lora_hashes(plan_prompt("no tags", library), library) is None


def test_names_with_separators_are_cleaned_in_the_infotext(tmp_path: Path) -> None:
    _lora(tmp_path / "Lora" / "a,b.safetensors", 3)
    lib = LoraLibrary([tmp_path / "Lora"], tmp_path / "h.sqlite")
    value = lora_hashes(plan_prompt("<lora:a,b:1>", lib), lib)
    assert value == f"ab: {_short(tmp_path / 'Lora' / 'a,b.safetensors')}"


def test_hashing_off_leaves_no_lora_hashes(tmp_path: Path) -> None:
    _lora(tmp_path / "Lora" / "x.safetensors", 4)
    lib = LoraLibrary([tmp_path / "Lora"], tmp_path / "h.sqlite", hashing=False)
    assert lora_hashes(plan_prompt("<lora:x:1>", lib), lib) is None


def test_pasted_prompt_is_relinked_to_the_local_file_with_that_hash(
    library: LoraLibrary, tmp_path: Path
) -> None:
    ink = library.find("Ink")
    assert ink is not None
    short = library.shorthash(ink)  # hashed once on this machine (the cache is what relinking reads)
    pasted = "<lora:inky_from_civitai:0.6> and <lora:unknown:1> <lora:add_detail>"
    infotext_value = f'"inky_from_civitai: {short}, unknown: 0123456789ab"'
    out = relink_pasted_prompt(pasted, infotext_value, library)
    assert out == "<lora:Ink:0.6> and <lora:unknown:1> <lora:add_detail>"
    assert [a.network.name for a in plan_prompt(out, library).activations] == ["Ink", "add_detail"]


def test_card_tag_uses_alias_preferred_weight_and_activation_text(
    library: LoraLibrary, tmp_path: Path
) -> None:
    ink, detail = library.find("Ink"), library.find("add_detail")
    assert ink is not None and detail is not None
    assert card_tag(detail, library) == "<lora:add_detail:1>"
    assert (
        card_tag(ink, library) == "<lora:ink_v2:1>"
        and card_tag(ink, library, prefer_alias=False) == "<lora:Ink:1>"
    )
    sidecar = {"preferred weight": 0.65, "activation text": "ink sketch, lineart"}
    (tmp_path / "Lora" / "styles" / "Ink.json").write_text(json.dumps(sidecar), encoding="utf-8")
    library.refresh()
    ink = library.find("Ink")
    assert ink is not None and card_tag(ink, library) == "<lora:ink_v2:0.65> ink sketch, lineart"
    # an alias that is another file's name would pick that file: the name is used instead
    _lora(tmp_path / "Lora" / "clash.safetensors", 5, ss_output_name="add_detail")
    library.refresh()
    clash = library.find("clash")
    assert clash is not None and card_tag(clash, library) == "<lora:clash:1>"
