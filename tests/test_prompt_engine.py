"""The prompt language through the engine: prompt editing reaches the UNet at the scheduled step, long
prompts, AND, embeddings and styles, with infotext round trips that reproduce the image bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.outputs.infotext import parse_infotext
from webui.core.prompts.chunks import tokenize_prompt
from webui.core.prompts.embeddings import write_embedding
from webui.core.prompts.encode import token_widths
from webui.core.types import GenerationResult, Txt2ImgRequest

SMALL: dict[str, Any] = dict(width=64, height=64, steps=4, cfg_scale=7.0, seed=7, save_images=False)


@pytest.fixture(scope="module")
def manager(tiny_data_dir: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    config = AppConfig.for_data_dir(
        manager.config.data_dir,
        outputs_dir=tmp_path / "outputs",
        embeddings_dir=tmp_path / "embeddings",
        styles_path=tmp_path / "styles.csv",
    )
    return Engine(config, manager)


def _run(engine: Engine, prompt: str, **kw: Any) -> GenerationResult:
    args = dict(SMALL, prompt=prompt, negative_prompt="blurry", checkpoint="tiny-sd1")
    args.update(kw)
    return engine.run(Txt2ImgRequest(**args))


def _pixels(result: GenerationResult) -> np.ndarray:
    return np.asarray(result.images[0].image)


class _UNetSpy:
    """Records the encoder_hidden_states the UNet receives at each call."""

    def __init__(self, unet: Any) -> None:
        self.calls: list[torch.Tensor] = []
        self._handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _m: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(kwargs["encoder_hidden_states"].detach().clone())

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def spy(manager: ModelManager) -> Iterator[_UNetSpy]:
    with manager.acquire("tiny-sd1", None) as model:
        s = _UNetSpy(model.components.unet)
        yield s
        s.close()


def test_prompt_editing_switches_the_unet_input_at_the_scheduled_step(
    engine: Engine, manager: ModelManager, spy: _UNetSpy
) -> None:
    _run(engine, "a [cat:dog:2] on grass", steps=5, negative_prompt="")
    with manager.acquire("tiny-sd1", None) as model:
        from webui.core.prompts.encode import encode_tokenized

        parts = model.components

        def enc(text: str) -> torch.Tensor:
            return encode_tokenized(parts, tokenize_prompt(text, parts.tokenizer)).embeds[0]

        cat, dog = enc("a cat on grass"), enc("a dog on grass")
    assert len(spy.calls) == 5  # one UNet call per step: [uncond, cond]
    conds = [c[1] for c in spy.calls]
    # A1111: a step i (0-based) uses the first schedule entry whose end step >= i: [(2, cat), (5, dog)]
    assert [torch.equal(c, cat) for c in conds] == [True, True, True, False, False]
    assert [torch.equal(c, dog) for c in conds] == [False, False, False, True, True]


def test_alternation_changes_every_step(engine: Engine, manager: ModelManager, spy: _UNetSpy) -> None:
    _run(engine, "[cat|dog]", steps=5)
    conds = [c[1] for c in spy.calls]
    # schedule [(1, cat), (2, dog), (3, cat), (4, dog), (5, cat)]; 0-based step i takes the first entry
    # with end >= i, so steps 0 and 1 both read "cat" (A1111 counts the same way), then it alternates
    same = [torch.equal(conds[i], conds[0]) for i in range(5)]
    assert same == [True, True, False, True, False]


def test_a_200_token_prompt_is_3_chunks_and_differs_from_its_first_75_tokens(
    engine: Engine, manager: ModelManager, spy: _UNetSpy
) -> None:
    words = [("cat", "dog", "tree", "house", "sky")[i % 5] for i in range(200)]
    prompt = " ".join(words)
    with manager.acquire("tiny-sd1", None) as model:
        tok = model.components.tokenizer
        ids = tok(prompt, add_special_tokens=False).input_ids
        assert len(ids) == 200
        chunks = tokenize_prompt(prompt, tok).chunks
        assert len(chunks) == 3
        first75 = tok.decode(ids[:75])
    long_img = _pixels(_run(engine, prompt, negative_prompt=""))
    assert spy.calls[0].shape[1] == 3 * 77  # cond and the (padded) uncond
    short_img = _pixels(_run(engine, first75, negative_prompt=""))
    assert not np.array_equal(long_img, short_img)


def test_and_runs_one_unet_group_per_part_and_weights_matter(engine: Engine, spy: _UNetSpy) -> None:
    both = _pixels(_run(engine, "a cat AND a dog", steps=2))
    assert spy.calls[0].shape[0] == 3  # uncond + 2 parts
    weighted = _pixels(_run(engine, "a cat AND a dog :0.3", steps=2))
    single = _pixels(_run(engine, "a cat", steps=2))
    assert not np.array_equal(both, weighted) and not np.array_equal(both, single)


def test_weights_change_the_image_and_the_prompt_is_recorded_as_typed(engine: Engine) -> None:
    plain = _run(engine, "a red apple")
    weighted = _run(engine, "a (red:1.6) apple")
    assert not np.array_equal(_pixels(plain), _pixels(weighted))
    assert parse_infotext(weighted.images[0].infotext)["Prompt"] == "a (red:1.6) apple"


def _sd1_width(manager: ModelManager) -> int:
    with manager.acquire("tiny-sd1", None) as model:
        return token_widths(model.components)[0]


def test_embedding_by_name_changes_the_image_records_ti_hashes_and_round_trips(
    engine: Engine, manager: ModelManager, tmp_path: Path
) -> None:
    width = _sd1_width(manager)
    before = _pixels(_run(engine, "a photo in mystyle"))
    path = write_embedding(
        tmp_path / "embeddings" / "mystyle.pt",
        torch.randn(2, width, generator=torch.Generator().manual_seed(3)),
    )
    result = _run(engine, "a photo in mystyle", save_images=True)
    after = _pixels(result)
    assert not np.array_equal(before, after)
    import hashlib

    info = parse_infotext(result.images[0].infotext)
    assert info["TI hashes"] == f"mystyle: {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    # paste the infotext back: same settings, same image
    again = _run(engine, info["Prompt"], negative_prompt=info["Negative prompt"], seed=int(info["Seed"]))
    assert np.array_equal(after, _pixels(again))


def test_an_sd1_embedding_on_sdxl_is_skipped_not_a_crash(
    engine: Engine, manager: ModelManager, tmp_path: Path
) -> None:
    width = _sd1_width(manager)
    write_embedding(tmp_path / "embeddings" / "mystyle.safetensors", torch.randn(2, width))
    plain = _run(engine, "a photo in thestyle", checkpoint="tiny-sdxl")
    used = _run(engine, "a photo in mystyle", checkpoint="tiny-sdxl")
    assert "TI hashes" not in parse_infotext(used.images[0].infotext)
    assert len(used.warnings) == 1 and "'mystyle'" in used.warnings[0] and "width" in used.warnings[0]
    assert plain.warnings == ()
    assert plain.images and used.images


def test_style_is_applied_recorded_in_the_prompt_and_round_trips(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text(
        'name,prompt,negative_prompt\nOil,"oil painting of {prompt}, thick brush",lowres\n', encoding="utf-8"
    )
    styled = _run(engine, "a red apple", styles=("Oil",), negative_prompt="blurry")
    info = parse_infotext(styled.images[0].infotext)
    assert info["Prompt"] == "oil painting of a red apple, thick brush"
    assert info["Negative prompt"] == "blurry, lowres"
    again = _run(engine, info["Prompt"], negative_prompt=info["Negative prompt"])
    assert np.array_equal(_pixels(styled), _pixels(again))
    unstyled = _run(engine, "a red apple", negative_prompt="blurry")
    assert not np.array_equal(_pixels(styled), _pixels(unstyled))


def test_unknown_style_is_a_request_error_naming_styles(engine: Engine) -> None:
    from webui.core.types import RequestError

    with pytest.raises(RequestError) as e:
        _run(engine, "a red apple", styles=("Nope",))
    assert e.value.field == "styles"


@pytest.mark.parametrize("checkpoint", ["tiny-sdxl", "tiny-sd2-v"])
def test_prompt_syntax_runs_on_other_architectures(engine: Engine, checkpoint: str) -> None:
    r = _run(engine, "a [cat:dog:0.5] (red:1.2) AND a hat BREAK blue", checkpoint=checkpoint, steps=3)
    assert np.asarray(r.images[0].image).std() > 0
