"""Detection and config inference on the real architectures, at full size, on the meta device.

Every shipped config is built without weights, written in the single-file (LDM) layout with each
architecture's prefixes, and read back the way the loader reads a file: detect, then size the shipped
configs from the shapes. The models built from the inferred configs must have exactly the names and
shapes of the shipped ones, so the real checkpoints load, not only the tiny fixtures.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from webui.core.models.configs import ARCHITECTURES, load_component_config
from webui.core.models.detect import REFINER_TE, SD1_TE, SD2_TE, SDXL_TE1, SDXL_TE2, UNET, detect
from webui.core.models.infer import text_config, text_encoder_prefixes, unet_config, vae_config
from webui.core.models.ldm_layout import unet_to_ldm, vae_to_ldm
from webui.core.models.loader import VAE_PREFIX, _text_model
from webui.core.models.text_layout import clip_to_ldm, openclip_to_ldm

PATH = Path("real.safetensors")
V_YAML = {"model": {"params": {"parameterization": "v"}}}
# arch -> text encoder component -> (single-file prefix, layout); "openclip+1" has SD2's extra block
TEXT: dict[str, dict[str, tuple[str, str]]] = {
    "sd1": {"text_encoder": (SD1_TE, "clip")},
    "sd1-inpaint": {"text_encoder": (SD1_TE, "clip")},
    "sd1-edit": {"text_encoder": (SD1_TE, "clip")},
    "sd2": {"text_encoder": (SD2_TE, "openclip+1")},
    "sd2-v": {"text_encoder": (SD2_TE, "openclip+1")},
    "sdxl": {"text_encoder": (SDXL_TE1, "clip"), "text_encoder_2": (SDXL_TE2, "openclip")},
    "sdxl-refiner": {"text_encoder_2": (REFINER_TE, "openclip")},
}
UNET_FIELDS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block")
UNET_FIELDS += ("cross_attention_dim", "attention_head_dim", "use_linear_projection")
UNET_FIELDS += ("down_block_types", "up_block_types")
SDXL_FIELDS = ("projection_class_embeddings_input_dim", "addition_time_embed_dim")
VAE_FIELDS = ("block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels")
TEXT_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
TEXT_FIELDS += ("vocab_size", "max_position_embeddings")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _shapes(sd: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _assert_same_shapes(got: Any, want: Any, what: str) -> None:
    """Equal parameter (and buffer) names and shapes, with a readable difference."""
    a, b = _shapes(got.state_dict()), _shapes(want.state_dict())
    missing, extra = sorted(b.keys() - a.keys()), sorted(a.keys() - b.keys())
    wrong = sorted(f"{k}: {a[k]} != {b[k]}" for k in a.keys() & b.keys() if a[k] != b[k])
    assert not (missing or extra or wrong), (
        f"{what}: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}, "
        f"{len(wrong)} of wrong shape {wrong[:3]}"
    )


def _text_cfg(cfg: dict[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"})


def _build(component: str, cfg: dict[str, Any]) -> Any:
    with init_empty_weights():
        if component == "unet":
            return UNet2DConditionModel.from_config(cfg)
        if component == "vae":
            return AutoencoderKL.from_config(cfg)
        with_proj = cfg.get("architectures") == ["CLIPTextModelWithProjection"]
        return (CLIPTextModelWithProjection if with_proj else CLIPTextModel)(_text_cfg(cfg))


def _single_file(models: dict[str, Any], arch: str) -> dict[str, Tensor]:
    """The meta models as one single-file state dict, with the architecture's prefixes."""
    unet, vae = models["unet"], models["vae"]
    sd = {UNET + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    sd.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    for comp, (prefix, layout) in TEXT[arch].items():
        te = models[comp]
        if layout == "clip":
            sd.update(clip_to_ldm(te.state_dict(), prefix))
            continue
        extra = None
        if layout == "openclip+1":  # the block after the penultimate one, which the HF model lacks
            with init_empty_weights():
                extra = CLIPEncoderLayer(te.config).state_dict()
        sd.update(openclip_to_ldm(te.state_dict(), prefix, extra_final_block=extra))
    return sd


@functools.cache
def _shipped(arch: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """(configs, meta models, single-file meta state dict) of a shipped architecture."""
    cfgs = {c: load_component_config(arch, c) for c in ("unet", "vae", *TEXT[arch])}
    models = {c: _build(c, cfg) for c, cfg in cfgs.items()}
    return cfgs, models, _single_file(models, arch)


def _infer(shapes: dict[str, tuple[int, ...]], arch: str) -> dict[str, dict[str, Any]]:
    """What the loader infers: component -> config, from the shipped configs of `arch`."""
    det = detect(PATH, shapes, V_YAML if arch == "sd2-v" else None)
    te = {
        comp: text_config(shapes, load_component_config(arch, comp), layout, prefix)
        for comp, (layout, prefix) in text_encoder_prefixes(det).items()
    }
    proj = te.get("text_encoder_2", {}).get("projection_dim")
    return {
        "unet": unet_config(shapes, load_component_config(arch, "unet"), det, proj),
        "vae": vae_config(shapes, load_component_config(arch, "vae"), VAE_PREFIX),
        **te,
    }


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_detects_shipped_architecture(arch: str) -> None:
    _, _, sd = _shipped(arch)
    det = detect(PATH, _shapes(sd), V_YAML if arch == "sd2-v" else None)
    assert det.base_config == arch
    assert det.inpaint == (arch == "sd1-inpaint")
    assert det.prediction_type == ("v_prediction" if arch == "sd2-v" else "epsilon")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_inferred_configs_keep_the_shipped_fields(arch: str) -> None:
    cfgs, _, sd = _shipped(arch)
    got = _infer(_shapes(sd), arch)
    assert sorted(got) == sorted(cfgs)
    fields = {"unet": UNET_FIELDS + (SDXL_FIELDS if arch.startswith("sdxl") else ()), "vae": VAE_FIELDS}
    for comp in cfgs:
        names = fields.get(comp, TEXT_FIELDS + (("projection_dim",) if comp == "text_encoder_2" else ()))
        for name in names:
            assert _plain(got[comp][name]) == _plain(cfgs[comp][name]), f"{comp}.{name}"


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("comp", ["unet", "vae"])
def test_inferred_unet_and_vae_have_the_shipped_parameters(arch: str, comp: str) -> None:
    _, models, sd = _shipped(arch)
    got = _build(comp, _infer(_shapes(sd), arch)[comp])
    _assert_same_shapes(got, models[comp], f"{arch} {comp}")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_inferred_text_encoders_load_the_file_and_have_the_shipped_parameters(arch: str) -> None:
    _, models, sd = _shipped(arch)
    inferred = _infer(_shapes(sd), arch)
    det = detect(PATH, _shapes(sd), V_YAML if arch == "sd2-v" else None)
    for comp, (layout, prefix) in text_encoder_prefixes(det).items():
        # the loader's own path: a model built on meta from the inferred config, loaded strictly
        got = _text_model(layout, inferred[comp], sd, prefix)
        assert type(got) is type(models[comp]), comp
        _assert_same_shapes(got, models[comp], f"{arch} {comp}")


def test_sd2_without_yaml_is_epsilon() -> None:
    det = detect(PATH, _shapes(_shipped("sd2-v")[2]), None)
    assert (det.family, det.prediction_type, det.base_config) == ("sd2", "epsilon", "sd2")


@pytest.mark.parametrize("arch", ["sd1", "sd2"])
def test_v_pred_marker_means_v_prediction(arch: str) -> None:
    det = detect(PATH, {**_shapes(_shipped(arch)[2]), "v_pred": ()}, None)
    assert det.prediction_type == "v_prediction"
    assert det.base_config == ("sd2-v" if arch == "sd2" else "sd1")


def test_sd2_inpainting_unet_is_detected_and_sized() -> None:
    cfgs, models, _ = _shipped("sd2")
    unet = _build("unet", {**cfgs["unet"], "in_channels": 9})
    sd = _single_file({**models, "unet": unet}, "sd2")
    shapes = _shapes(sd)
    assert shapes[UNET + "input_blocks.0.0.weight"][1] == 9
    det = detect(PATH, shapes, None)
    assert (det.family, det.inpaint, det.prediction_type) == ("sd2", True, "epsilon")
    cfg = _infer(shapes, "sd2")["unet"]
    assert cfg["in_channels"] == 9
    _assert_same_shapes(_build("unet", cfg), unet, "sd2 inpaint unet")
