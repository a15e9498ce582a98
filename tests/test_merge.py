"""The checkpoint merger on tiny real checkpoints: tensors read back from the written file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from webui.core.models.checkpoint_file import load_state_dict
from webui.core.models.merge import MergeCancelled, MergeError, MergeRequest, merge_checkpoints
from webui.core.models.tiny import build_tiny, save_single_file


@pytest.fixture(scope="module")
def sd1_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("merge")
    out = {name: save_single_file(build_tiny("sd1", seed=seed), folder / f"{name}.safetensors")
           for name, seed in (("a", 1), ("b", 2), ("c", 3))}  # fmt: skip
    out["ckpt"] = save_single_file(build_tiny("sd1", seed=2), folder / "b-pickle.ckpt")
    out["diffusers_vae"] = folder / "diffusers-layout.vae.safetensors"  # not the checkpoint's LDM layout
    save_file(build_tiny("sd1", seed=4).vae.state_dict(), str(out["diffusers_vae"]))
    return out


def _read(path: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(path)


def _is_merged(key: str) -> bool:
    return "model" in key and key != "cond_stage_model.transformer.text_model.embeddings.position_ids"


def test_weighted_sum_is_a_times_one_minus_m_plus_b_times_m(
    sd1_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "mix.safetensors"
    result = merge_checkpoints(
        MergeRequest(sd1_files["a"], out, "Weighted sum", sd1_files["b"], multiplier=0.5)
    )
    a, b, m = _read(sd1_files["a"]), _read(sd1_files["b"]), _read(out)
    assert set(m) == set(a) and result.tensors == len(a) and result.family == "sd1"
    floats = [k for k in a if a[k].is_floating_point() and _is_merged(k)]
    assert len(floats) > 100 and result.merged >= len(floats)
    for k in floats:
        torch.testing.assert_close(m[k], (a[k] + b[k]) / 2, rtol=0, atol=1e-6)
        assert m[k].dtype == a[k].dtype
    changed = [k for k in floats if not torch.equal(a[k], b[k])]
    assert changed and all(not torch.equal(m[k], a[k]) for k in changed)


def test_multiplier_and_a_pickle_secondary(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mix.safetensors"
    merge_checkpoints(MergeRequest(sd1_files["a"], out, "Weighted sum", sd1_files["ckpt"], multiplier=0.25))
    a, b, m = _read(sd1_files["a"]), _read(sd1_files["ckpt"]), _read(out)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    torch.testing.assert_close(m[key], a[key] * 0.75 + b[key] * 0.25, rtol=0, atol=1e-6)


def test_add_difference(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "diff.safetensors"
    req = MergeRequest(sd1_files["a"], out, "Add difference", sd1_files["b"], sd1_files["c"], multiplier=0.7)
    merge_checkpoints(req)
    a, b, c = (_read(sd1_files[k]) for k in "abc")
    m = _read(out)
    for k in (k for k in a if a[k].is_floating_point() and _is_merged(k)):
        torch.testing.assert_close(m[k], a[k] + (b[k] - c[k]) * 0.7, rtol=0, atol=1e-5)


def test_half_discard_and_recipe(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "half.safetensors"
    req = MergeRequest(
        sd1_files["a"], out, "No interpolation", save_as_half=True, discard_weights=r"^model_ema\.|\.attn1\."
    )
    merge_checkpoints(req, metadata={"sd_merge_models": "{}"})
    a, m = _read(sd1_files["a"]), _read(out)
    assert not any(".attn1." in k for k in m) and any(".attn1." in k for k in a)
    assert set(m) == {k for k in a if ".attn1." not in k}
    assert all(t.dtype == torch.float16 for t in m.values() if t.is_floating_point())
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(m[key], a[key].half())
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["interp_method"] == "No interpolation" and recipe["primary_model"] == "a.safetensors"
    assert meta["sd_merge_models"] == "{}" and meta["format"] == "pt"


def test_bake_in_vae(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    b = _read(sd1_files["b"])
    vae_file = tmp_path / "other.vae.safetensors"
    save_file(
        {k.removeprefix("first_stage_model."): v for k, v in b.items() if k.startswith("first_stage_model.")},
        vae_file,
    )
    out = tmp_path / "baked.safetensors"
    merge_checkpoints(MergeRequest(sd1_files["a"], out, "No interpolation", bake_in_vae=vae_file))
    a, m = _read(sd1_files["a"]), _read(out)
    assert set(m) == set(a)
    for k in m:
        assert torch.equal(m[k], b[k] if k.startswith("first_stage_model.") else a[k]), k


def test_merged_file_loads_and_generates(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    from webui.core.config import AppConfig
    from webui.core.engine import Engine
    from webui.core.types import Txt2ImgRequest

    data = tmp_path / "data"
    out = data / "models" / "Stable-diffusion" / "merged.safetensors"
    merge_checkpoints(MergeRequest(sd1_files["a"], out, "Weighted sum", sd1_files["b"], multiplier=0.5))
    engine = Engine(AppConfig.for_data_dir(data))
    result = engine.run(Txt2ImgRequest(prompt="a cat", steps=2, width=64, height=64, checkpoint="merged"))
    assert result.model_title.startswith("merged.safetensors")
    assert result.images and result.images[0].path is not None and result.images[0].path.is_file()


def test_inpainting_primary_merges_its_first_four_channels(
    tiny_files: dict[str, Path], sd1_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "inpaint-mix.safetensors"
    merge_checkpoints(
        MergeRequest(tiny_files["sd1-inpaint"], out, "Weighted sum", sd1_files["a"], multiplier=0.5)
    )
    a, b, m = _read(tiny_files["sd1-inpaint"]), _read(sd1_files["a"]), _read(out)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert m[key].shape[1] == 9
    torch.testing.assert_close(m[key][:, :4], (a[key][:, :4] + b[key]) / 2, rtol=0, atol=1e-6)
    assert torch.equal(m[key][:, 4:], a[key][:, 4:])


R = MergeRequest
WS, AD, NI = "Weighted sum", "Add difference", "No interpolation"


@pytest.mark.parametrize(
    ("make", "field", "words"),
    [
        (lambda f, t, o: R(f["a"], o, WS, t["sdxl"]), "secondary", "different families"),
        (lambda f, t, o: R(f["a"], o, WS, t["sd1-inpaint"]), "secondary", "must be the primary"),
        (lambda f, t, o: R(f["a"], o, AD, f["b"]), "tertiary", "needs a tertiary"),
        (lambda f, t, o: R(f["a"], o, "Average"), "method", "unknown method"),
        (lambda f, t, o: R(f["a"], o, WS, f["b"], multiplier=1.5), "multiplier", "between 0 and 1"),
        (lambda f, t, o: R(f["a"], o.with_suffix(".ckpt"), NI), "output", ".safetensors"),
        (lambda f, t, o: R(f["a"], f["b"], NI), "output", "already exists"),
        (lambda f, t, o: R(f["a"], o, NI, discard_weights="(["), "discard_weights", "regular expression"),
        (lambda f, t, o: R(f["a"], o, NI, bake_in_vae=f["diffusers_vae"]), "bake_in_vae", "does not fit"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field_and_write_nothing(
    make: object,
    field: str,
    words: str,
    sd1_files: dict[str, Path],
    tiny_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.safetensors"
    request = make(sd1_files, tiny_files, out)  # type: ignore[operator]
    with pytest.raises(MergeError) as info:
        merge_checkpoints(request)
    assert info.value.field == field and words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cancel_and_progress_leave_nothing_behind(sd1_files: dict[str, Path], tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    out = tmp_path / "cancelled.safetensors"
    req = MergeRequest(sd1_files["a"], out, "Weighted sum", sd1_files["b"])
    with pytest.raises(MergeCancelled):
        merge_checkpoints(req, progress=lambda i, n: seen.append((i, n)), cancelled=lambda: len(seen) >= 10)
    assert len(seen) == 10 and seen[-1][1] > 10
    assert list(tmp_path.iterdir()) == []
