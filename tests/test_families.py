"""The family seam: every architecture has one family that says what the rest of the code asks.

- every shipped architecture maps to a family, and the family's facts agree with its shipped configs;
- each tiny fixture's latents have the shape its family says (the VAE's and the UNet's real shapes);
- nothing outside `webui/core/families/` asks "is this SDXL?" (a source scan);
- the loop's BEFORE_MODEL hook adds model inputs: a zero ControlNet-style residual changes nothing,
  a non-zero one changes the picture; at CFG 1 the model sees no uncond rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from webui.core import families, sizes
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models import configs
from webui.core.models.components import Components, Precision
from webui.core.models.detect import Detected
from webui.core.models.loader import load_model
from webui.core.models.tiny import ARCHES
from webui.core.prompts.chunks import CHUNK_LENGTH
from webui.core.prompts.encode import encode_prompts
from webui.core.sampling.loop import HookPoint, ModelCallState
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import make_scheduler
from webui.core.tasks.img2img import encode_init
from webui.core.tasks.txt2img import run_txt2img
from webui.core.types import Txt2ImgRequest

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
SEEDS = [3, 4]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


UNET_ARCHITECTURES = tuple(f.arch for f in families.FAMILIES if not f.flow_matching)
FLOW_ARCHITECTURES = tuple(f.arch for f in families.FAMILIES if f.flow_matching)


@pytest.fixture(scope="module")
def loaded(tiny_files: dict[str, Path]) -> dict[str, Components]:
    return {arch: load_model(path, Precision()) for arch, path in tiny_files.items()}


# ---- every arch has a family, and the family agrees with its shipped configs ------------------------


def test_every_shipped_architecture_has_one_family() -> None:
    folders = {p.name for p in configs.configs_root().iterdir() if (p / "model_index.json").is_file()}
    assert set(UNET_ARCHITECTURES) == folders  # flow families are sized from their tensors
    assert len(families.ARCHITECTURES) == len(set(families.ARCHITECTURES))
    for arch in families.ARCHITECTURES:
        assert families.family(arch).arch == arch
    with pytest.raises(ValueError, match="unknown architecture 'sd9'; valid names: sd1, "):
        families.family("sd9")


@pytest.mark.parametrize("arch", UNET_ARCHITECTURES)
def test_family_facts_match_the_shipped_configs(arch: str) -> None:
    fam = families.family(arch)
    index = configs.load_model_index(arch)
    assert index["_class_name"] == fam.pipeline_class
    present = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]}
    assert present == set(fam.components)
    vae = configs.load_component_config(arch, "vae")
    assert vae["latent_channels"] == fam.latent.channels
    assert vae["scaling_factor"] == fam.latent.scaling_factor
    assert vae["shift_factor"] == fam.latent.shift_factor
    assert 2 ** (len(vae["block_out_channels"]) - 1) == fam.latent.downscale
    assert len(fam.latent.preview_rgb) == fam.latent.channels
    unet = configs.load_component_config(arch, "unet")
    assert unet["in_channels"] == fam.in_channels
    assert unet["out_channels"] == fam.latent.channels
    assert configs.load_component_config(arch, "scheduler")["prediction_type"] == fam.prediction_type
    assert [e.component for e in fam.text.encoders] == [c for c in fam.components if c.startswith("text_")]
    ids = fam.size_conditioning(96, 64, 2, True)
    assert (ids is None) == (fam.time_id_count == 0)
    if ids is not None:
        assert ids.shape[1] == fam.time_id_count
        addition = (
            unet["projection_class_embeddings_input_dim"] - unet["addition_time_embed_dim"] * ids.shape[1]
        )
        assert addition == configs.load_component_config(arch, "text_encoder_2")["projection_dim"]


OFFICIAL = {"sd3": (1.5305, 0.0609, 3.0), "flux": (0.3611, 0.1159, 3.0)}  # VAE scale, shift; sampling shift


@pytest.mark.parametrize("arch", FLOW_ARCHITECTURES)
def test_flow_family_facts_are_the_official_ones(arch: str) -> None:
    """SD3 and Flux have no shipped configs: their facts are the official configs' values
    (shared/reference/model-families: vae/config.json and scheduler/scheduler_config.json)."""
    fam = families.family(arch)
    assert fam.files is not None
    scale, shift, sched_shift = OFFICIAL[fam.group]
    assert (fam.latent.scaling_factor, fam.latent.shift_factor) == (scale, shift)
    assert fam.files.scheduler["shift"] == (1.0 if arch == "flux-schnell" else sched_shift)
    assert fam.files.scheduler.get("use_dynamic_shifting", False) == (arch == "flux-dev")
    assert fam.latent.channels == 16 and len(fam.latent.preview_rgb) == 16
    assert fam.latent.size_multiple == 16 and fam.prediction_type == "flow"
    assert len(fam.files.clip_parts) == len(fam.text.encoders)
    assert set(fam.tasks) == {"txt2img", "img2img", "inpaint", "hires"}
    assert fam.text.t5_length == (512 if arch == "flux-dev" else 256)
    assert fam.distilled_guidance == (fam.defaults.distilled_cfg_scale is not None)
    assert [e.component for e in fam.text.encoders] == [
        c for c in fam.components if c.startswith("text_") and c != "text_encoder_3"
    ]


@pytest.mark.parametrize(
    ("group", "inpaint", "prediction", "arch", "label"),
    [
        ("sd1", False, "epsilon", "sd1", "SD1"),
        ("sd1", True, "epsilon", "sd1-inpaint", "SD1 (inpaint)"),
        ("sd2", False, "v_prediction", "sd2-v", "SD2 (v)"),
        ("sd2", True, "epsilon", "sd2", "SD2 (inpaint)"),
        ("sdxl", True, "epsilon", "sdxl", "SDXL (inpaint)"),
        ("sdxl-refiner", False, "epsilon", "sdxl-refiner", "SDXL refiner"),
    ],
)
def test_detected_checkpoints_pick_their_family(
    group: str, inpaint: bool, prediction: str, arch: str, label: str
) -> None:
    det = Detected(group, inpaint, prediction)
    assert det.base_config == arch and det.label == label


def test_every_family_has_the_latent_downscale_sizes_assume() -> None:
    """Hires targets, outpainting canvases and seed resizing round to sizes.LATENT_DOWNSCALE; a family
    with another downscale needs them to ask it (and this test to go)."""
    assert {f.latent.downscale for f in families.FAMILIES} == {sizes.LATENT_DOWNSCALE}


def test_token_limits_are_the_chunks_the_prompt_code_builds() -> None:
    assert {f.text.token_limit for f in families.FAMILIES} == {CHUNK_LENGTH + 2}  # BOS + 75 + EOS


def test_the_refiner_only_refines() -> None:
    refiner = families.family("sdxl-refiner")
    assert not refiner.supports("txt2img") and not refiner.supports("hires") and refiner.supports("img2img")
    assert all(families.family(a).supports("txt2img") for a in families.ARCHITECTURES if a != refiner.arch)


# ---- the tiny fixtures' latents have their family's shape -------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_latent_shape_of_each_fixture_comes_from_its_family(arch: str, loaded: dict[str, Components]) -> None:
    parts = loaded[arch]
    fam = families.of(parts)
    assert fam.arch == arch
    shape = fam.latent.shape(96, SIZE)
    picture = torch.zeros(1, 3, SIZE, 96)
    assert tuple(encode_init(parts, picture).shape[1:]) == shape
    assert parts.unet.config.out_channels == shape[0]
    assert fam.takes_image_cond(parts.unet) == (arch == "sd1-inpaint")
    preview = fam.latent.preview(torch.zeros(shape))
    assert tuple(preview.shape) == (3, *shape[1:])


# ---- nothing outside families/ asks which architecture a model is -----------------------------------

_GROUPS = "|".join(sorted({re.escape(f.group) for f in families.FAMILIES}, key=len, reverse=True))
_ARCH = rf"[\"']({_GROUPS})(-[\w-]*)?[\"']"  # a string literal naming an architecture: "sdxl-refiner"
ARCH_TESTS = re.compile(
    rf"\.arch\s*(==|!=|\bin\b)|\barch\s*(==|!=)|\bfamily\s*(==|!=)"  # comparing an arch or family
    rf"|(==|!=)\s*{_ARCH}|{_ARCH}\s*(==|!=)"  # == "sdxl"
    rf"|\bin\s*[(\[{{]\s*{_ARCH}"  # in ("sd1", ...)
    rf"|startswith\(\s*[\"']({_GROUPS})"  # .startswith("sdxl")
    rf"|\b(is_)?sdxl\s*="  # sdxl = <some test>
)
# file -> why it may still mention architectures by name
# models/detect.py needs no exception: it reads keys and shapes and *names* the group it found
# ("sdxl"...); families.pick maps groups to archs and behaviour.
# (file, line fragment) -> why: a name that is not a model architecture
ALLOWED_LINES = {
    ("webui/core/prompts/embeddings.py", 'fmt == "sdxl"'): "an embedding file format (clip_l + clip_g)",
    ("webui/core/pass_models.py", "family.arch != joins.arch"): "refiner: same arch as its model",
    ("webui/core/pass_models.py", 'family.group == "sdxl-refiner"'): "refused: no aesthetic score yet",
    ("webui/core/sampling/sigma_schedules.py", 'startswith("sdxl")'): "NVIDIA publishes AYS tables per base",
    # the library reads a base model's *name* from free text (a sidecar's "sd version", training metadata)
    ("webui/core/library/cards.py", 't.startswith("sd3")'): "a base name written by people or tools",
    ("webui/core/library/cards.py", 't.startswith("sd2")'): "a base name written by people or tools",
    ("webui/core/library/cards.py", 't.startswith("sd1")'): "a base name written by people or tools",
}
# file -> why it may name architectures throughout (flow_loader asks each family's `files` instead)
ALLOWED_FILES = {
    "webui/core/models/tiny_flow.py": "builds the tiny test fixture of each flow arch (their shapes differ)",
    # a ControlNet / T2I-Adapter file is made for one base; these read which from its keys and
    # shapes (as models/detect.py names the group it found) and refuse a mismatch with the model
    "extensions/controlnet/layout.py": "the base a ControlNet file was trained for",
    "extensions/controlnet/adapter.py": "the base a T2I-Adapter file was trained for",
    "extensions/controlnet/flow_layout.py": "the family (SD3 / Flux) an SD3 or Flux ControlNet file is for",
}


def test_no_architecture_tests_outside_families() -> None:
    found = []
    for path in sorted([*(ROOT / "webui").rglob("*.py"), *(ROOT / "extensions").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("webui/core/families/", "webui/assets/")) or rel in ALLOWED_FILES:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if ARCH_TESTS.search(code) and not any(rel == f and frag in code for f, frag in ALLOWED_LINES):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "ask webui.core.families instead:\n" + "\n".join(found)


def test_the_source_scan_finds_what_it_should() -> None:
    for line in (
        'if parts.arch == "sdxl-refiner":',
        'sdxl = model.components.arch.startswith("sdxl")',
        'if det.family == "sd1" and det.inpaint:',
        'cfg = 8 if "sd1" == arch else 64',
        'if arch in ("sd1", "sd1-inpaint"):',
    ):
        assert ARCH_TESTS.search(line), line
    assert not ARCH_TESTS.search("family = families.of(parts)")


# ---- BEFORE_MODEL: hooks add model inputs -----------------------------------------------------------


def _residual_shapes(unet: object, h: int, w: int) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """The shapes of a ControlNet's residuals for this UNet: one per down-block output, and the mid."""
    cfg = unet.config  # type: ignore[attr-defined]
    channels = list(cfg.block_out_channels)
    shapes = [(channels[0], h, w)]
    for i, ch in enumerate(channels):
        shapes += [(ch, h, w)] * cfg.layers_per_block
        if i < len(channels) - 1:
            h, w = (h + 1) // 2, (w + 1) // 2
            shapes.append((ch, h, w))
    return shapes, (channels[-1], h, w)


class Residuals:
    """A ControlNet-style BEFORE_MODEL hook: adds `scale` x fixed residuals to every model call."""

    def __init__(self, unet: object, scale: float) -> None:
        self.unet, self.scale = unet, scale
        self.rows: list[int] = []

    def __call__(self, point: HookPoint, state: ModelCallState) -> None:
        assert point is HookPoint.BEFORE_MODEL
        x = state.inputs.sample
        self.rows.append(x.shape[0])
        down, mid = _residual_shapes(self.unet, x.shape[2], x.shape[3])
        g = torch.Generator().manual_seed(state.step)
        state.inputs.extra["down_block_additional_residuals"] = tuple(
            self.scale * torch.randn(x.shape[0], *s, generator=g) for s in down
        )
        state.inputs.extra["mid_block_additional_residual"] = self.scale * torch.randn(
            x.shape[0], *mid, generator=g
        )


def _generate(parts: Components, cfg_scale: float = 7.0, hook: Residuals | None = None) -> torch.Tensor:
    fam = families.of(parts)
    shape = fam.latent.shape(SIZE, SIZE)
    sched = make_scheduler("Euler", None, parts.scheduler_config, noise_seeds=SEEDS)
    cond = encode_prompts(parts, ["a red apple"] * len(SEEDS))
    uncond = encode_prompts(parts, ["blurry"] * len(SEEDS))
    return run_txt2img(
        parts,
        sched,
        initial_noise(shape, SEEDS, SEEDS, 0.0, (-1, -1)),
        NoiseSource.for_seeds(shape, SEEDS).generator_list(),
        cond,
        uncond,
        steps=4,
        cfg_scale=cfg_scale,
        width=SIZE,
        height=SIZE,
        model_hooks=[hook] if hook is not None else (),
    )


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_a_zero_residual_changes_nothing(arch: str, loaded: dict[str, Components]) -> None:
    parts = loaded[arch]
    base = _generate(parts)
    hook = Residuals(parts.unet, 0.0)
    assert torch.equal(_generate(parts, hook=hook), base)
    assert hook.rows == [2 * len(SEEDS)] * 4  # uncond and cond rows of every image, every step


def test_a_residual_changes_the_result(loaded: dict[str, Components]) -> None:
    parts = loaded["sd1"]
    base = _generate(parts)
    changed = _generate(parts, hook=Residuals(parts.unet, 0.5))
    assert changed.shape == base.shape and not torch.allclose(changed, base, atol=1e-3)


def test_cfg_1_calls_the_model_without_uncond_rows(loaded: dict[str, Components]) -> None:
    parts = loaded["sd1"]
    hook = Residuals(parts.unet, 0.0)
    _generate(parts, cfg_scale=1.0, hook=hook)
    assert hook.rows == [len(SEEDS)] * 4


def test_the_engine_passes_model_hooks_to_both_hires_passes(tiny_data_dir: Path, tmp_path: Path) -> None:
    engine = Engine(AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path))
    request = Txt2ImgRequest(
        prompt="a red apple", checkpoint="tiny-sd1", seed=5, width=64, height=64, steps=4,
        enable_hr=True, hr_scale=1.5, denoising_strength=0.5, save_images=False,
    )  # fmt: skip
    base = np.asarray(engine.run(request).images[0].image)
    unet = load_model(engine.manager.resolve("tiny-sd1").path, Precision()).unet
    zero = Residuals(unet, 0.0)
    hooked = np.asarray(engine.run(request, model_hooks=[zero]).images[0].image)
    assert np.array_equal(hooked, base)
    assert len(zero.rows) == 4 + 2  # the first pass's steps, then the second pass's (strength 0.5)
    changed = np.asarray(engine.run(request, model_hooks=[Residuals(unet, 0.5)]).images[0].image)
    assert not np.array_equal(changed, base)
