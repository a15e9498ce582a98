"""Golden images: the same seed gives the same image after an update.

Small reference PNGs made by the tiny fixtures on the CPU are checked in under tests/golden/. A run
must stay within 2/255 of each (CPUs differ in float rounding, so no exact hashes). A change that moves
any of them fails until the references are deliberately regenerated, with the reason recorded:

    .venv/bin/python tests/test_golden.py --regenerate "why the images changed" [--all]

(only the missing references are written unless --all is given).
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
TOLERANCE = 2  # of 255

# (fixture, sampler, schedule, seed, width, height)
CASES = [
    ("sd1", "Euler", "Automatic", 1, 64, 64),
    ("sd1", "Euler a", "Automatic", 2, 64, 64),
    ("sd1", "DPM++ 2M", "Karras", 3, 64, 96),
    ("sd1", "DDIM", "Automatic", 4, 64, 64),
    ("sd1", "DPM++ SDE", "Karras", 5, 64, 64),
    ("sd1-inpaint", "Euler", "Automatic", 6, 64, 64),
    ("sd2-v", "Euler", "Automatic", 7, 64, 64),
    ("sdxl", "Euler a", "Automatic", 8, 64, 64),
    ("sdxl", "UniPC", "Automatic", 9, 96, 64),
    # the flow families (single files in the layouts people download: Stability's, ComfyUI's)
    ("sd3", "Euler", "Simple", 10, 64, 64),
    ("sd3.5", "DPM++ 2M", "Automatic", 11, 64, 96),
    ("flux-dev", "Euler", "Simple", 12, 64, 64),
    ("flux-schnell", "UniPC", "Karras", 13, 96, 64),
]
FLOW_LAYOUTS = {"sd3": "stability", "sd3.5": "stability", "flux-dev": "comfy", "flux-schnell": "comfy"}


def _name(case: tuple[str, str, str, int, int, int]) -> str:
    arch, sampler, schedule, seed, w, h = case
    slug = f"{sampler}-{schedule}".lower().replace("+", "p").replace(" ", "-")
    return f"{arch}-{slug}-s{seed}-{w}x{h}.png"


def make_engine(data_dir: Path) -> Any:
    from webui.core.config import AppConfig
    from webui.core.engine import Engine

    return Engine(AppConfig.for_data_dir(data_dir))


def render(engine: Any, case: tuple[str, str, str, int, int, int]) -> np.ndarray:
    from webui.core.types import Txt2ImgRequest

    arch, sampler, schedule, seed, w, h = case
    request = Txt2ImgRequest(
        prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry", checkpoint=f"tiny-{arch}",
        sampler_name=sampler, scheduler=schedule, seed=seed, width=w, height=h, steps=8,
        cfg_scale=1.0 if arch.startswith("flux") else 6.0, save_images=False,
    )  # fmt: skip
    return np.asarray(engine.run(request).images[0].image)


def write_checkpoints(ckpts: Path, tiny_files: dict[str, Path] | None = None) -> None:
    """`tiny-<arch>.safetensors` for every case's arch (the session's SD files where given)."""
    import shutil

    from webui.core.models.tiny import build_tiny, save_single_file
    from webui.core.models.tiny_flow import build_tiny_flow, save, single_file

    for arch in sorted({c[0] for c in CASES}):
        path = ckpts / f"tiny-{arch}.safetensors"
        if arch in FLOW_LAYOUTS:
            save(single_file(build_tiny_flow(arch, seed=0), FLOW_LAYOUTS[arch]), path)
        elif tiny_files is not None:
            shutil.copy(tiny_files[arch], path)
            yaml = tiny_files[arch].with_suffix(".yaml")  # sd2-v's v-prediction config beside it
            if yaml.is_file():
                shutil.copy(yaml, path.with_suffix(".yaml"))
        else:
            save_single_file(build_tiny(arch, seed=0), path)


@pytest.fixture(scope="module")
def engine(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("golden")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    write_checkpoints(data / "models" / "Stable-diffusion", tiny_files)
    return make_engine(data)


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_matches_golden_image(case: tuple[str, str, str, int, int, int], engine: Any) -> None:
    from PIL import Image

    ref_path = GOLDEN / _name(case)
    assert ref_path.is_file(), f"missing reference {ref_path.name}: regenerate (see module docstring)"
    with Image.open(ref_path) as ref:
        expected = np.asarray(ref.convert("RGB")).astype(int)
    got = render(engine, case).astype(int)
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff <= TOLERANCE, f"{ref_path.name}: max pixel difference {diff}/255 (allowed {TOLERANCE})"


def regenerate(reason: str) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from webui import offline

    offline.apply()
    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = Path(tmp) / "models" / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        write_checkpoints(ckpts)
        engine = make_engine(Path(tmp))
        for case in CASES:
            if (GOLDEN / _name(case)).is_file() and "--all" not in sys.argv:
                continue  # existing references stay as they are unless --all
            Image.fromarray(render(engine, case)).save(GOLDEN / _name(case))
            print("wrote", _name(case))
    with open(GOLDEN / "CHANGES.md", "a", encoding="utf-8") as f:
        f.write(f"- {datetime.date.today().isoformat()}: {reason}\n")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "--regenerate" or not sys.argv[2].strip():
        sys.exit(__doc__)
    regenerate(sys.argv[2])
