"""Shipped diffusers-format configs: folder contents, loading, and parameter counts on the meta device."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from typing import Any

import pytest

from webui.core.models import configs
from webui.core.models.tokenizer import EOS_TOKEN, OPENCLIP_PAD_TOKEN

PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd1-inpaint": "StableDiffusionInpaintPipeline",
    "sd1-edit": "StableDiffusionInstructPix2PixPipeline",
    "sd2": "StableDiffusionPipeline",
    "sd2-v": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}

# Parameter counts of the official releases, recomputed here from the configs on the meta device.
# The refiner UNet is 2,259,526,660: a figure of 2,519,487,940 that circulates matches no variant of
# this architecture (attention on any subset of levels, depth 1/2/4, context 1280/2048), while the
# released sd_xl_refiner_1.0 fp16 file (~6.08 GB = ~3.04 G params) minus its text encoder (694.7 M)
# and VAE (83.7 M) leaves ~2.26 G for the UNet.
PARAMS = {
    ("sd1", "unet"): 859_520_964,
    ("sd1", "vae"): 83_653_863,
    ("sd1", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text tower
    ("sd1-inpaint", "unet"): 859_535_364,  # sd1 + 5 input channels x 320 x 3 x 3
    ("sd1-inpaint", "vae"): 83_653_863,
    ("sd1-inpaint", "text_encoder"): 123_060_480,
    ("sd1-edit", "unet"): 859_532_484,  # sd1 + 4 input channels x 320 x 3 x 3
    ("sd1-edit", "vae"): 83_653_863,
    ("sd1-edit", "text_encoder"): 123_060_480,
    ("sd2", "unet"): 865_910_724,
    ("sd2", "vae"): 83_653_863,
    ("sd2", "text_encoder"): 340_387_840,  # OpenCLIP ViT-H/14 text tower, 23 of 24 blocks, no projection
    ("sd2-v", "unet"): 865_910_724,
    ("sd2-v", "vae"): 83_653_863,
    ("sd2-v", "text_encoder"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "vae"): 83_653_863,
    ("sdxl", "text_encoder"): 123_060_480,
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP ViT-bigG/14 text tower with projection
    ("sdxl-refiner", "unet"): 2_259_526_660,
    ("sdxl-refiner", "vae"): 83_653_863,
    ("sdxl-refiner", "text_encoder_2"): 694_659_840,
}
TOKENIZERS = ("tokenizer", "tokenizer_2")


def _components(arch: str) -> dict[str, tuple[str, str]]:
    """Non-null components of model_index.json: name -> (library, class)."""
    index = configs.load_model_index(arch)
    return {
        name: (value[0], value[1])
        for name, value in index.items()
        if isinstance(value, list) and len(value) == 2 and value[0] is not None
    }


def _build_on_meta(arch: str, component: str) -> Any:
    from accelerate import init_empty_weights

    library, class_name = _components(arch)[component]
    cls = getattr(importlib.import_module(library), class_name)
    cfg = configs.load_component_config(arch, component)
    with init_empty_weights():
        if library == "transformers":
            from transformers import CLIPTextConfig

            return cls(CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))
        model, unused = cls.from_config(cfg, return_unused_kwargs=True)
    unknown = sorted(k for k in unused if not k.startswith("_"))
    assert unknown == [], f"{arch}/{component}: keys diffusers does not know: {unknown}"
    return model


# ---- the module's API ------------------------------------------------------------------------------


def test_architectures_match_folders() -> None:
    folders = {p.parent.name for p in configs.configs_root().glob("*/model_index.json")}
    assert folders == set(configs.ARCHITECTURES)
    assert all(configs.config_dir(arch).is_dir() for arch in configs.ARCHITECTURES)


def test_unknown_arch_lists_valid_names() -> None:
    names = r"sd1, sd1-inpaint, sd1-edit, sd2, sd2-v, sdxl"
    with pytest.raises(ValueError, match=rf"unknown architecture 'sd3'.*{names}"):
        configs.config_dir("sd3")
    with pytest.raises(ValueError, match="valid names"):
        configs.load_component_config("flux", "unet")


def test_missing_component_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"'sdxl-refiner' has no 'text_encoder' config; it has: .*text_encoder_2"
    ):
        configs.load_component_config("sdxl-refiner", "text_encoder")
    with pytest.raises(ValueError, match="has no 'tokenizer_2'"):
        configs.pad_token_for("sd1", "tokenizer_2")


def test_load_returns_fresh_dicts() -> None:
    first = configs.load_component_config("sd1", "unet")
    first["in_channels"] = 99
    assert configs.load_component_config("sd1", "unet")["in_channels"] == 4


@pytest.mark.parametrize(
    ("arch", "component", "pad"),
    [
        ("sd1", "tokenizer", EOS_TOKEN),
        ("sd1-inpaint", "tokenizer", EOS_TOKEN),
        ("sd2", "tokenizer", OPENCLIP_PAD_TOKEN),
        ("sd2-v", "tokenizer", OPENCLIP_PAD_TOKEN),
        ("sdxl", "tokenizer", EOS_TOKEN),
        ("sdxl", "tokenizer_2", OPENCLIP_PAD_TOKEN),
        ("sdxl-refiner", "tokenizer_2", OPENCLIP_PAD_TOKEN),
    ],
)
def test_pad_tokens(arch: str, component: str, pad: str) -> None:
    assert configs.pad_token_for(arch, component) == pad


# ---- folder contents -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", configs.ARCHITECTURES)
def test_folder_has_what_model_index_names(arch: str) -> None:
    import diffusers

    index = configs.load_model_index(arch)
    assert index["_class_name"] == PIPELINES[arch]
    pipeline = getattr(diffusers, index["_class_name"])
    modules = [n for n, p in inspect.signature(pipeline.__init__).parameters.items() if n != "self"]
    for name in modules:
        assert name in index, f"{arch}: model_index.json does not mention {name!r}"
    components = _components(arch)
    for name, (library, class_name) in components.items():
        assert hasattr(importlib.import_module(library), class_name), f"{library}.{class_name}"
        if name in TOKENIZERS:  # built by webui.core.models.tokenizer, not shipped per architecture
            assert (library, class_name) == ("transformers", "CLIPTokenizer")
            configs.pad_token_for(arch, name)
        else:
            assert configs.load_component_config(arch, name)
    required = {"unet", "vae", "scheduler"} | ({"text_encoder_2"} if "xl" in arch else {"text_encoder"})
    assert required <= set(components)
    shipped = {p.parent.name for p in configs.config_dir(arch).glob("*/*.json")}
    assert shipped == set(components) - set(TOKENIZERS), "a config folder model_index.json does not name"
    if arch == "sdxl-refiner":
        assert index["text_encoder"] == index["tokenizer"] == [None, None]
        assert index["requires_aesthetics_score"] is True


@pytest.mark.parametrize("arch", configs.ARCHITECTURES)
def test_components_fit_together(arch: str) -> None:
    """Cross-component facts: context width, pooled size conditioning, latent channels."""
    unet = configs.load_component_config(arch, "unet")
    vae = configs.load_component_config(arch, "vae")
    widths = [
        configs.load_component_config(arch, te)["hidden_size"]
        for te in ("text_encoder", "text_encoder_2")
        if te in _components(arch)
    ]
    assert unet["cross_attention_dim"] == sum(widths)
    extra = {"sd1-inpaint": 5, "sd1-edit": 4}.get(arch, 0)  # mask + masked image / source image
    assert unet["in_channels"] == vae["latent_channels"] + extra
    assert unet["out_channels"] == vae["latent_channels"] == 4
    if "xl" in arch:
        te2 = configs.load_component_config(arch, "text_encoder_2")
        n_ids = (
            5 if arch == "sdxl-refiner" else 6
        )  # sizes and crop (+ aesthetic score instead of target size)
        expected = te2["projection_dim"] + n_ids * unet["addition_time_embed_dim"]
        assert unet["projection_class_embeddings_input_dim"] == expected
        assert vae["scaling_factor"] == 0.13025 and vae["force_upcast"] is True
    else:
        assert vae["scaling_factor"] == 0.18215


@pytest.mark.parametrize(
    ("arch", "scheduler", "prediction", "unet_sample"),
    [
        ("sd1", "PNDMScheduler", "epsilon", 64),
        ("sd1-inpaint", "DDIMScheduler", "epsilon", 64),
        ("sd2", "PNDMScheduler", "epsilon", 64),
        ("sd2-v", "DDIMScheduler", "v_prediction", 96),
        ("sdxl", "EulerDiscreteScheduler", "epsilon", 128),
        ("sdxl-refiner", "EulerDiscreteScheduler", "epsilon", 128),
    ],
)
def test_scheduler_and_resolution(arch: str, scheduler: str, prediction: str, unet_sample: int) -> None:
    import diffusers

    cfg = configs.load_component_config(arch, "scheduler")
    assert cfg["_class_name"] == scheduler
    sched, unused = getattr(diffusers, scheduler).from_config(cfg, return_unused_kwargs=True)
    assert [k for k in unused if not k.startswith("_")] == []
    assert sched.config.prediction_type == prediction
    assert sched.config.timestep_spacing == "leading" and sched.config.steps_offset == 1
    assert (sched.config.beta_start, sched.config.beta_end) == (0.00085, 0.012)
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.num_train_timesteps == 1000
    assert configs.load_component_config(arch, "unet")["sample_size"] == unet_sample


# ---- instantiation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "component"), sorted(PARAMS))
def test_parameter_count_on_meta(arch: str, component: str) -> None:
    model = _build_on_meta(arch, component)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(arch, component)]


def test_every_model_component_is_counted() -> None:
    models = {
        (arch, name) for arch in configs.ARCHITECTURES for name in _components(arch) if name not in TOKENIZERS
    }
    assert models - {(a, "scheduler") for a in configs.ARCHITECTURES} == set(PARAMS)


@pytest.mark.parametrize("arch", ["sd2", "sdxl"])
def test_text_configs_load_with_transformers(arch: str) -> None:
    from transformers import AutoConfig, CLIPTextConfig

    for name in ("text_encoder", "text_encoder_2"):
        if name not in _components(arch):
            continue
        folder = configs.config_dir(arch) / name
        cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        assert isinstance(cfg, CLIPTextConfig)
        direct = CLIPTextConfig(**configs.load_component_config(arch, name))
        assert cfg.to_diff_dict() == direct.to_diff_dict()
        assert cfg.architectures == [_components(arch)[name][1]]
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.max_position_embeddings) == (49406, 49407, 77)


def test_shipped_files_are_what_the_generator_writes() -> None:
    """generate.py renders the release values through the pinned libraries; nobody edits JSON by hand."""
    path = configs.configs_root() / "generate.py"
    spec = importlib.util.spec_from_file_location("configs_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arch in configs.ARCHITECTURES:
        for rel, text in module.arch_files(arch).items():
            shipped = (configs.config_dir(arch) / rel).read_text(encoding="utf-8")
            assert shipped == text, f"{arch}/{rel} differs: rerun python {path}"
            json.loads(shipped)
