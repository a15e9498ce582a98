"""The wildcards extension: {a|b} variants and __name__ files, reproducible from the seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui.core.config import AppConfig
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost


def host_for(data_dir: Path) -> PluginHost:
    host = PluginHost.for_config(AppConfig.for_data_dir(data_dir), include_pip=False)
    assert host.extension("wildcards").loaded, host.extension("wildcards").error
    return host


def expand(host: PluginHost, **kw: object) -> Txt2ImgRequest:
    req = host.request_received(Txt2ImgRequest(**kw))  # type: ignore[arg-type]
    assert host.take_problems() == []
    return req


def test_same_seed_same_choice_and_seeds_vary_it(tmp_path: Path) -> None:
    host = host_for(tmp_path)
    words = ["cat", "dog", "fox", "owl", "eel"]
    template = "a {" + "|".join(words) + "} in the snow"
    picks = {}
    for seed in range(20):
        a = expand(host, prompt=template, seed=seed)
        assert a.prompt == expand(host, prompt=template, seed=seed).prompt
        assert a.prompt.startswith("a ") and a.prompt.endswith(" in the snow")
        picks[seed] = a.prompt[2:-12]
    assert set(picks.values()) <= set(words)
    assert len(set(picks.values())) >= 3, "different seeds should pick different variants"


def test_wildcard_files_user_folder_first(tmp_path: Path) -> None:
    host = host_for(tmp_path)
    shipped = {"red", "green", "blue", "golden", "silver"}
    assert {expand(host, prompt="__color__ car", seed=s).prompt.split()[0] for s in range(30)} <= shipped
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards" / "color.txt").write_text("teal\nmauve\n")
    host = host_for(tmp_path)  # the folder is chosen per request; a new host is not needed but cheap
    seen = {expand(host, prompt="__color__ car", seed=s).prompt.split()[0] for s in range(30)}
    assert seen == {"teal", "mauve"}


def test_random_seed_is_fixed_so_the_infotext_reproduces_it(tmp_path: Path) -> None:
    host = host_for(tmp_path)
    req = expand(host, prompt="{a|b|c|d|e|f|g|h}", negative_prompt="{x|y|z}, blurry", seed=-1)
    assert req.seed >= 0
    again = expand(host, prompt="{a|b|c|d|e|f|g|h}", negative_prompt="{x|y|z}, blurry", seed=req.seed)
    assert (again.prompt, again.negative_prompt) == (req.prompt, req.negative_prompt)
    assert req.negative_prompt.endswith(", blurry") and req.negative_prompt[0] in "xyz"
    info = host.extra_infotext(req)
    assert info == {"Template": "{a|b|c|d|e|f|g|h}", "Negative Template": "{x|y|z}, blurry"}
    # the expanded request passes through the host again (as the X/Y/Z plot's cells do)
    assert host.request_received(req).prompt == req.prompt


def test_plain_prompts_and_switched_off_are_untouched(tmp_path: Path) -> None:
    host = host_for(tmp_path)
    plain = Txt2ImgRequest(prompt="(a cat:1.2), [dog|fox], 50% off", seed=-1)
    assert host.request_received(plain) is plain
    off = Txt2ImgRequest(prompt="{a|b}", seed=3, extension_args={"wildcards": {"enabled": False}})
    assert host.request_received(off) is off
    assert host.extra_infotext(off) == {}


def test_bad_template_is_a_request_error_naming_the_field(tmp_path: Path) -> None:
    host = host_for(tmp_path)
    with pytest.raises(RequestError) as e:
        host.request_received(Txt2ImgRequest(prompt="a {cat|dog", seed=1))
    assert e.value.field == "prompt"
