"""instruct-pix2pix (edit) models: detection, the three-branch guidance, and `image_cfg_scale` end to end.

An edit UNet takes 8 input channels (the latents and the source image's unscaled latents). The engine's
img2img must compute what diffusers' `StableDiffusionInstructPix2PixPipeline` computes from the same
modules, embeddings and noise (strength 1: both start from pure noise), and `image_cfg_scale` must change
the result on an edit model and reach the user as a warning on any other model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image

from webui.core import families
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.checkpoint_file import tensor_shapes
from webui.core.models.components import Precision
from webui.core.models.detect import detect
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.outputs.infotext import parse_infotext
from webui.core.outputs.saving import read_infotext
from webui.core.prompts.encode import encode_prompts
from webui.core.sampling.guidance import CFG, InstructPix2Pix
from webui.core.sampling.noise import NoiseSource, initial_noise
from webui.core.sampling.samplers import make_scheduler
from webui.core.types import Img2ImgRequest, Txt2ImgRequest

PROMPT, NEGATIVE = "turn it into a watercolour", "blurry"
SIZE = 64
STEPS = 4


@pytest.fixture(scope="module")
def edit_data(tmp_path_factory: pytest.TempPathFactory, tiny_files: dict[str, Path]) -> Path:
    """A data folder with the tiny edit model and the plain tiny SD1 (a hard link: not rebuilt)."""
    data = tmp_path_factory.mktemp("edit-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    save_single_file(build_tiny("sd1-edit", seed=3), ckpts / "tiny-edit.safetensors")
    (ckpts / "tiny-sd1.safetensors").hardlink_to(tiny_files["sd1"])
    return data


@pytest.fixture(scope="module")
def manager(edit_data: Path) -> ModelManager:
    m = ModelManager(AppConfig.for_data_dir(edit_data), Precision())
    m.refresh()
    return m


@pytest.fixture
def engine(manager: ModelManager, tmp_path: Path) -> Engine:
    return Engine(AppConfig.for_data_dir(manager.config.data_dir, outputs_dir=tmp_path / "out"), manager)


def _picture() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def _request(**kw: object) -> Img2ImgRequest:
    base: dict[str, object] = dict(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, seed=11, width=SIZE, height=SIZE,
        sampler_name="Euler", cfg_scale=7.0, denoising_strength=1.0, init_images=(_picture(),),
        checkpoint="tiny-edit",
    )  # fmt: skip
    base.update(kw)
    return Img2ImgRequest(**base)  # type: ignore[arg-type]


def test_an_8_channel_sd1_unet_is_detected_as_the_edit_arch(edit_data: Path) -> None:
    path = edit_data / "models" / "Stable-diffusion" / "tiny-edit.safetensors"
    found = detect(path, tensor_shapes(path))
    assert found.arch.arch == "sd1-edit" and found.arch.edit and not found.inpaint
    assert found.arch.group == "sd1"  # SD1 LoRAs and embeddings still apply
    assert "instruct-pix2pix" in found.label
    assert families.pick("sd1", False, "epsilon").arch == "sd1"  # never picked for a plain file


def test_three_branch_guidance_is_the_published_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    u0, ui, c1, c2 = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(4))
    g = InstructPix2Pix(image_cfg_scale=1.5)
    out = g.combine(torch.cat([u0, ui, c1]), 3, [1.0], 7.0)
    torch.testing.assert_close(out, u0 + 7.0 * (c1 - ui) + 1.5 * (ui - u0))
    two = g.combine(torch.cat([u0, ui, c1, c2]), 4, [0.5, 0.25], 7.0)  # AND parts with weights
    torch.testing.assert_close(two, u0 + 1.5 * (ui - u0) + 3.5 * (c1 - ui) + 1.75 * (c2 - ui))
    # at image CFG 1 the formula is plain CFG against the negative prompt *with* the image
    torch.testing.assert_close(
        InstructPix2Pix(1.0).combine(torch.cat([u0, ui, c1]), 3, [1.0], 7.0),
        CFG.combine(torch.cat([ui, c1]), 2, [1.0], 7.0),
    )


def test_rows_give_the_negative_prompt_once_without_and_once_with_the_image() -> None:
    image = torch.randn(2, 4, 3, 3)
    groups, rows = InstructPix2Pix(1.5).rows(["u", "c"], image)  # type: ignore[list-item]
    assert groups == ["u", "u", "c"]
    assert rows is not None and rows.shape[0] == 6
    assert torch.equal(rows[:2], torch.zeros_like(image))
    assert torch.equal(rows[2:4], image) and torch.equal(rows[4:], image)
    with pytest.raises(ValueError, match="source image"):
        InstructPix2Pix(1.5).rows(["u", "c"], None)  # type: ignore[list-item]


def test_engine_img2img_matches_diffusers_instruct_pix2pix_pipeline(
    engine: Engine, manager: ModelManager
) -> None:
    request = _request(image_cfg_scale=1.5)
    ours = engine.run(request)
    with manager.acquire("tiny-edit") as loaded:
        parts = loaded.components
        shape = families.of(parts).latent.shape(SIZE, SIZE)
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            scheduler=make_scheduler("Euler", "Automatic", parts.scheduler_config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe(
            image=request.init_images[0],
            prompt_embeds=encode_prompts(parts, [PROMPT]).embeds,
            negative_prompt_embeds=encode_prompts(parts, [NEGATIVE]).embeds,
            latents=initial_noise(shape, [11]),
            generator=NoiseSource.for_seeds(shape, [11]).generator_list(),
            num_inference_steps=STEPS,
            guidance_scale=7.0,
            image_guidance_scale=1.5,
            output_type="pil",
        ).images[0]
    a = np.asarray(ours.images[0].image).astype(int)
    b = np.asarray(theirs).astype(int)
    assert np.abs(a - b).max() <= 1, f"max pixel difference {np.abs(a - b).max()}/255"


def test_image_cfg_scale_changes_the_result_and_is_written(engine: Engine) -> None:
    low = engine.run(_request(image_cfg_scale=1.2))
    high = engine.run(_request(image_cfg_scale=3.0))
    unset = engine.run(_request())
    assert not np.array_equal(np.asarray(low.images[0].image), np.asarray(high.images[0].image))
    assert not np.array_equal(np.asarray(low.images[0].image), np.asarray(unset.images[0].image))
    path = high.images[0].path
    assert path is not None
    info = parse_infotext(read_infotext(path) or "")
    assert info["Image CFG scale"] == "3"
    unset_path = unset.images[0].path
    assert unset_path is not None and "Image CFG scale" not in parse_infotext(read_infotext(unset_path) or "")
    assert not any("image_cfg_scale" in w for w in low.warnings)


def test_image_cfg_scale_on_a_plain_model_is_a_warning_and_changes_nothing(engine: Engine) -> None:
    with_it = engine.run(_request(checkpoint="tiny-sd1", image_cfg_scale=1.5, denoising_strength=0.6))
    without = engine.run(_request(checkpoint="tiny-sd1", denoising_strength=0.6))
    assert any("image_cfg_scale" in w and "instruct-pix2pix" in w for w in with_it.warnings)
    assert np.array_equal(np.asarray(with_it.images[0].image), np.asarray(without.images[0].image))


def test_txt2img_and_hires_run_on_an_edit_model(engine: Engine) -> None:
    result = engine.run(
        Txt2ImgRequest(
            prompt=PROMPT,
            steps=2,
            seed=1,
            width=SIZE,
            height=SIZE,
            checkpoint="tiny-edit",
            enable_hr=True,
            hr_scale=1.5,
            hr_upscaler="Latent",
            denoising_strength=0.5,
        )  # fmt: skip
    )
    assert result.images[0].image.size == (96, 96)
    assert np.asarray(result.images[0].image).std() > 0
