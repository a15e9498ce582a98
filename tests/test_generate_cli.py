"""`python -m webui.generate` as a script user runs it, with no network at all."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from webui import offline

ROOT = Path(__file__).resolve().parent.parent


def _generate(args: list[str], netns: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    offline.apply(env)
    cmd = [sys.executable, "-m", "webui.generate", *args]
    if netns:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _data_dir(tiny_data_dir: Path, tmp_path: Path) -> Path:
    """A fresh data folder whose checkpoints are the session's tiny fixtures."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "Stable-diffusion").symlink_to(tiny_data_dir / "models" / "Stable-diffusion")
    return data


def test_generates_a_png_that_sd_parsers_reads_back_with_networking_impossible(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    from sd_parsers import ParserManager

    data = _data_dir(tiny_data_dir, tmp_path)
    args = ["a castle on a hill, (sunset:1.2)", "--negative-prompt", "fog, rain", "--steps", "5",
            "--cfg-scale", "6.5", "--sampler", "Euler a", "--seed", "1234", "--width", "64", "--height", "96",
            "--model", "tiny-sd1", "--data-dir", str(data), "--batch-size", "2"]  # fmt: skip
    r = _generate(args, netns=True)
    assert r.returncode == 0, r.stderr[-2000:]
    paths = [Path(line) for line in r.stdout.split()]
    assert all(p.parent.parent == data / "outputs" / "txt2img-images" for p in paths)
    assert [p.name[-9:] for p in paths] == ["-1234.png", "-1235.png"]
    ckpt = tiny_data_dir / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    shorthash = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    with Image.open(paths[0]) as im:
        assert im.size == (64, 96)
        info = ParserManager().parse(im)
    assert info is not None
    sampler = info.samplers[0]
    assert [p.value for p in sampler.prompts] == ["a castle on a hill, (sunset:1.2)"]
    assert [p.value for p in sampler.negative_prompts] == ["fog, rain"]
    assert sampler.name == "Euler a"
    assert sampler.parameters["steps"] == "5" and sampler.parameters["cfg_scale"] == "6.5"
    assert sampler.parameters["seed"] == "1234"
    assert info.metadata["Size"] == "64x96"
    assert sampler.model is not None and sampler.model.hash == shorthash


@pytest.mark.parametrize(
    "args, needle",
    [
        (["x", "--steps", "-1"], "steps"),
        (["x", "--width", "100000"], "width"),
        (["x", "--cfg-scale", "nan"], "cfg_scale"),
        (["x", "--sampler", "Nope"], "sampler_name"),
        (["x", "--seed", str(2**64)], "seed"),
        (["x", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_values_exit_2_naming_the_field_and_write_nothing(
    tiny_data_dir: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    data = _data_dir(tiny_data_dir, tmp_path)
    r = _generate([*args, "--data-dir", str(data)])
    assert r.returncode == 2
    assert needle in r.stderr
    assert not (data / "outputs").exists()


def test_a_flux_file_writes_a_png_whose_infotext_reads_back(tiny_flux_data_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import FLUX_DEMO
    from webui.core.outputs.infotext import parse_infotext
    from webui.core.outputs.saving import read_infotext
    from webui.ui.params import from_infotext

    data = _data_dir(tiny_flux_data_dir, tmp_path)
    (data / "models" / "VAE").symlink_to(tiny_flux_data_dir / "models" / "VAE")
    model = Path(FLUX_DEMO).stem
    args = ["a lighthouse", "--model", model, "--module", "ae.safetensors", "--steps", "2", "--sampler",
            "Euler", "--cfg-scale", "1",
            "--distilled-cfg-scale", "4.5", "--seed", "3", "--width", "64", "--height", "80",
            "--data-dir", str(data)]  # fmt: skip
    r = _generate(args)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = [Path(line) for line in r.stdout.split()]
    with Image.open(path) as im:
        assert im.size == (64, 80)
        text = read_infotext(im) or ""
    params = parse_infotext(text)
    assert params["Model"] == model and params["Distilled CFG Scale"] == "4.5"
    assert params["Module 1"] == "ae"  # --module: the split model's VAE instead of the file's own
    fields = from_infotext(text)  # what PNG Info sends to txt2img
    assert fields["distilled_cfg_scale"] == 4.5 and fields["seed"] == 3 and fields["cfg_scale"] == 1.0
    assert (fields["width"], fields["height"], fields["steps"]) == (64, 80, 2)
    assert fields["sampler_name"] == "Euler"
