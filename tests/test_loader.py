"""Loading every fixture architecture from both layouts, bit-equal, offline; bad files fail cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.core.config import AppConfig
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict
from webui.core.models.components import Components, Precision
from webui.core.models.loader import load_model
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import ARCHES, TinyModel, build_tiny, save_diffusers, save_single_file

ROOT = Path(__file__).resolve().parent.parent
LABELS = {"sd1": "SD1", "sd1-inpaint": "SD1 (inpaint)", "sd2-v": "SD2 (v)", "sdxl": "SDXL"}


def _assert_same_weights(src: TinyModel, got: Components) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(src, name), getattr(got, name)
        if a is None:
            assert b is None, name
            continue
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) == set(sb), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k} differs"
        assert not any(p.is_meta for p in b.parameters())


@pytest.mark.parametrize("arch", ARCHES)
def test_single_file_round_trip_is_bit_equal(arch: str, tiny_files: dict[str, Path]) -> None:
    got = load_model(tiny_files[arch], Precision())
    assert got.label == LABELS[arch]
    assert got.prediction_type == ("v_prediction" if arch == "sd2-v" else "epsilon")
    _assert_same_weights(build_tiny(arch, seed=0), got)


@pytest.mark.parametrize("arch", ARCHES)
def test_diffusers_folder_loads_bit_equal(arch: str, tmp_path: Path) -> None:
    src = build_tiny(arch, seed=1)
    got = load_model(save_diffusers(src, tmp_path / f"tiny-{arch}"), Precision())
    assert got.label == LABELS[arch]
    _assert_same_weights(src, got)


def test_ckpt_pickle_layout_loads_bit_equal(tmp_path: Path) -> None:
    src = build_tiny("sd1", seed=2)
    _assert_same_weights(src, load_model(save_single_file(src, tmp_path / "m.ckpt"), Precision()))


def test_tokenizers_match_family(tiny_files: dict[str, Path]) -> None:
    sdxl = load_model(tiny_files["sdxl"], Precision())
    assert sdxl.tokenizer.model_max_length == 77 and sdxl.tokenizer_2.pad_token_id == 0
    sd1 = load_model(tiny_files["sd1"], Precision())
    assert sd1.tokenizer_2 is None and sd1.tokenizer.pad_token_id == 49407


def test_manager_finds_fixtures_under_a1111_data_dir_with_hashes(tiny_data_dir: Path) -> None:
    m = ModelManager(AppConfig.for_data_dir(tiny_data_dir))
    assert m.refresh() == ()
    titles = [f.title for f in m.hash_all()]
    assert sorted(t.split(" [")[0] for t in titles) == sorted(f"tiny-{a}.safetensors" for a in ARCHES)
    assert all(len(t.split(" [")[1]) == 11 for t in titles)  # 10 hex digits and "]"
    with m.acquire("tiny-sdxl") as model:
        assert model.components.label == "SDXL"
        assert model.file.shorthash and model.file.title in titles


def test_corrupt_file_fails_and_loaded_model_stays_usable(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    ckpts = data / "models" / "Stable-diffusion"
    good = (ckpts / "tiny-sd1.safetensors").read_bytes()
    (ckpts / "broken.safetensors").write_bytes(good[: len(good) // 2])
    m = ModelManager(AppConfig.for_data_dir(data))
    m.refresh()
    with m.acquire("tiny-sd1") as first:
        unet = first.components.unet
    with pytest.raises(CheckpointError, match="broken.safetensors.*incomplete file"), m.acquire("broken"):
        pass
    with m.acquire("tiny-sd1") as again:
        assert again.components.unet is unet  # still cached, not reloaded
        x = torch.zeros(1, 4, 8, 8)
        ctx = torch.zeros(1, 77, unet.config.cross_attention_dim)
        assert torch.isfinite(unet(x, 10, ctx).sample).all()


def test_unknown_architecture_and_misplaced_files_are_named(tmp_path: Path) -> None:
    p = tmp_path / "mystery.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2)}, str(p))
    with pytest.raises(CheckpointError, match="mystery.safetensors: unknown architecture"):
        load_model(p, Precision())
    vae_like = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(1, 3, 3, 3)}, str(vae_like))
    with pytest.raises(CheckpointError, match="looks like a VAE"):
        load_model(vae_like, Precision())


def test_checkpoint_missing_tensors_is_a_clear_error(tiny_files: dict[str, Path], tmp_path: Path) -> None:
    sd = load_state_dict(tiny_files["sd1"])
    del sd["model.diffusion_model.out.2.weight"]
    p = tmp_path / "partial.safetensors"
    save_file(sd, str(p))
    with pytest.raises(CheckpointError, match="partial.safetensors.*SD1"):
        load_model(p, Precision())


def test_vae_override_replaces_only_the_vae(tiny_data_dir: Path, tmp_path: Path) -> None:
    from webui.core.models.ldm_layout import vae_to_ldm

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    other = build_tiny("sd1", seed=7).vae
    save_file(
        vae_to_ldm(other.state_dict(), other.config), str(data / "models" / "VAE" / "my.vae.safetensors")
    )
    m = ModelManager(AppConfig.for_data_dir(data))
    m.refresh()
    with m.acquire("tiny-sd1", vae="my.vae.safetensors") as model:
        for k, v in other.state_dict().items():
            assert torch.equal(model.components.vae.state_dict()[k], v)
        assert model.vae_file is not None
    with m.acquire("tiny-sd1") as plain:
        assert plain.components.vae is not model.components.vae


def test_every_architecture_loads_with_networking_impossible(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Run the loader in a network namespace with no interfaces: any Hub call would fail loudly."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here; the socket guard still covers the other tests")
    folders = [str(save_diffusers(build_tiny(a, seed=3), tmp_path / f"folder-{a}")) for a in ARCHES]
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from webui import offline
offline.apply()
import os
os.environ.pop("HF_HUB_OFFLINE"); os.environ.pop("TRANSFORMERS_OFFLINE")  # only the namespace protects us
from webui.core.config import AppConfig
from webui.core.models.manager import ModelManager
from webui.core.models.loader import load_model
from webui.core.models.components import Precision
m = ModelManager(AppConfig.for_data_dir({str(tiny_data_dir)!r}))
m.refresh()
for f in m.hash_all():
    with m.acquire(f.title) as model:
        print("loaded", f.title, model.components.label)
for folder in {folders!r}:
    print("loaded", load_model(Path(folder), Precision()).label)
"""
    r = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("loaded") == 2 * len(ARCHES)


def test_weights_the_model_would_silently_drop_are_an_error(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    sd = load_state_dict(tiny_files["sd1"])
    sd["model.diffusion_model.unexpected_block.weight"] = torch.zeros(3, 3)
    p = tmp_path / "extra.safetensors"
    save_file(sd, str(p))
    with pytest.raises(CheckpointError, match="extra.safetensors.*UNet holds"):
        load_model(p, Precision())
