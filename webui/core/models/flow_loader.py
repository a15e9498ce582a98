"""Load SD3 / SD3.5 and Flux.1 models from the files people keep them in, offline, sized by their tensors.

A model is a denoiser (SD3's MMDiT or the Flux transformer), a 16-channel VAE and its text encoders
(SD3: CLIP-L, CLIP-G and T5-XXL; Flux: CLIP-L and T5-XXL). They come as:

- one all-in-one file (Stability's SD3 files; ComfyUI/Forge Flux files with `vae.` and `text_encoders.`);
- a denoiser-only file (BFL's Flux files) plus separate files: `clip_l`, `clip_g`, `t5xxl_fp16` or
  `t5xxl_fp8_e4m3fn` in a text-encoder folder and `ae` (Flux's VAE) in a VAE folder.

Parts the main file lacks come from `modules` (files the user picked, Forge's "VAE / Text Encoder"
list) and then from the folders by their usual names; a part still missing is an error that names the
file to add and where. fp8 weights of the transformer blocks' Linear layers stay fp8 in memory and are
upcast one layer at a time as it runs (`models.fp8`); other fp8 weights (text encoders, embedders, norms)
are upcast to the compute dtype as they are read. Each tensor is read once into the module built on the
meta device (no second copy of a 12B model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from webui.core import families
from webui.core.families.base import Family, FlowFiles
from webui.core.models import flow_infer, fp8
from webui.core.models.checkpoint_file import CheckpointError, read_safetensors_header
from webui.core.models.infer import ShapeError, vae_config
from webui.core.models.t5_tokenizer import t5_tokenizer
from webui.core.models.tokenizer import EOS_TOKEN, OPENCLIP_PAD_TOKEN, clip_tokenizer

UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIXES = {
    "clip_l": "text_encoders.clip_l.transformer.",
    "clip_g": "text_encoders.clip_g.transformer.",
    "t5": "text_encoders.t5xxl.transformer.",
}
VAE_PREFIXES = ("first_stage_model.", "vae.", "")
PART_FILES = {
    "clip_l": "clip_l.safetensors",
    "clip_g": "clip_g.safetensors",
    "t5": "t5xxl_fp16.safetensors",
    "vae": "ae.safetensors",
}


@dataclass(frozen=True, eq=False)
class FlowParts:
    family: str  # the group: "sd3" | "flux"
    variant: str  # the arch: "sd3" | "sd3.5" | "flux-dev" | "flux-schnell"
    transformer: Any
    vae: Any
    clip_l: Any
    clip_g: Any | None
    t5: Any
    tokenizer: Any
    tokenizer_2: Any | None  # SD3's CLIP-G tokenizer
    t5_tokenizer: Any
    scheduler_config: dict[str, Any]
    sources: dict[str, Path] = field(default_factory=dict)  # part -> the file it came from


@dataclass(frozen=True)
class _Found:
    path: Path
    prefix: str


class _Files:
    """Open safetensors files, read a tensor at a time."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._open: dict[Path, Any] = {}
        self.shapes: dict[Path, dict[str, tuple[int, ...]]] = {}

    def add(self, path: Path) -> dict[str, tuple[int, ...]]:
        if path not in self.shapes:
            self.shapes[path] = {k: m.shape for k, m in read_safetensors_header(path).items()}
        return self.shapes[path]

    def read(self, found: _Found, dtype: torch.dtype, keep_fp8: bool = False) -> dict[str, Tensor]:
        """The part's tensors without its prefix, floats in `dtype` (fp8 ones as they are if asked)."""
        if found.path not in self._open:
            from safetensors import safe_open

            self._open[found.path] = self._stack.enter_context(safe_open(str(found.path), "pt", device="cpu"))
        f = self._open[found.path]
        out = {}
        for key in self.shapes[found.path]:
            if key.startswith(found.prefix):
                t = f.get_tensor(key)
                keep = not t.is_floating_point() or (keep_fp8 and fp8.is_fp8(t))
                out[key[len(found.prefix) :]] = t if keep else t.to(dtype)
        return out


def _parts_in(shapes: Mapping[str, tuple[int, ...]], name: str) -> dict[str, str]:
    """The parts a file holds, each with its key prefix."""
    parts: dict[str, str] = {}
    for prefix in (UNET_PREFIX, ""):
        if families.of_flow_tensors(shapes, prefix) is not None:
            parts["transformer"] = prefix
            break
    for part, prefix in TEXT_PREFIXES.items():
        if any(k.startswith(prefix) for k in shapes):
            parts[part] = prefix
    for prefix in VAE_PREFIXES:
        if prefix + "decoder.conv_in.weight" in shapes and prefix + "encoder.conv_in.weight" in shapes:
            parts["vae"] = prefix
            break
    if "shared.weight" in shapes and "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes:
        parts["t5"] = ""
    if "text_model.embeddings.token_embedding.weight" in shapes:
        width = shapes["text_model.embeddings.token_embedding.weight"][1]
        lower = name.lower()
        is_g = "clip_g" in lower or (width >= 1280 and "clip_l" not in lower)
        parts["clip_g" if is_g else "clip_l"] = ""
    return parts


def _family(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> tuple[Family, FlowFiles]:
    found = families.of_flow_tensors(shapes, prefix)
    assert found is not None and found.files is not None  # _parts_in found its transformer
    return found, found.files


def _search(folders: Sequence[Path], part: str) -> list[Path]:
    """Candidate files for a part in folders, by the names people give them (higher precision first)."""
    words = {"clip_l": ("clip_l",), "clip_g": ("clip_g",), "t5": ("t5",), "vae": ("ae", "vae")}[part]
    found = []
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.rglob("*.safetensors")):
                stem = p.stem.lower()
                if any(
                    stem == w
                    or stem.startswith(w + "_")
                    or stem.startswith(w + "-")
                    or (w == "t5" and "t5" in stem)
                    for w in words
                ):
                    found.append(p)
    return sorted(found, key=lambda p: ("fp8" in p.name.lower(), p.name))


def _build(
    cls: Any,
    config: Any,
    sd: Mapping[str, Tensor],
    what: str,
    path: Path,
    ignore: Sequence[str] = (),
) -> Any:
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = cls(config) if not isinstance(config, dict) else cls(**config)
    missing, unexpected = module.load_state_dict(dict(sd), strict=False, assign=True)
    missing = [k for k in missing if k not in ignore]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(path, f"{what} weights do not fit its shape ({detail})")
    return module.eval().requires_grad_(False)


def _check_widths(
    spec: FlowFiles, transformer_cfg: Mapping[str, Any], text: Mapping[str, Any], sources: Mapping[str, Path]
) -> None:
    joint = transformer_cfg["joint_attention_dim"]
    if text["t5"]["d_model"] != joint:
        raise CheckpointError(
            sources["t5"],
            f"T5 width {text['t5']['d_model']} does not fit this {spec.label.upper()} model "
            f"(it takes {joint}): use T5-XXL",
        )
    pooled = transformer_cfg["pooled_projection_dim"]
    have = sum(text[p]["projection_dim" if spec.projected(p) else "hidden_size"] for p in spec.clip_parts)
    if have != pooled:
        raise CheckpointError(
            sources[spec.clip_parts[-1]],
            f"CLIP text encoders give {have} pooled features, the model takes {pooled}",
        )


def _transformer_config(files: _Files, found: _Found, spec: FlowFiles) -> dict[str, Any]:
    return spec.config(files.shapes[found.path], found.prefix)


def _transformer(
    files: _Files, found: _Found, spec: FlowFiles, config: dict[str, Any], dtype: torch.dtype
) -> Any:
    import diffusers

    raw = files.read(found, dtype, keep_fp8=True)
    sd = spec.from_original(raw)
    del raw
    sd = {
        k: v if fp8.keep_fp8(k, v, spec.fp8_blocks) or not v.is_floating_point() else v.to(dtype)
        for k, v in sd.items()
    }
    cls = getattr(diffusers, spec.transformer_class)
    transformer = _build(cls, config, sd, f"{spec.label} transformer", found.path)
    fp8.fp8_linears(transformer)
    fp8.upcast_other_fp8(transformer, dtype)
    return transformer


def load_flow_transformer(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    """Only the SD3 / Flux transformer of `path` (an all-in-one or a transformer-only file), in `dtype`;
    the file's text encoders and VAE are not read."""
    with ExitStack() as stack:
        files = _Files(stack)
        own = _parts_in(files.add(path), path.name)
        if "transformer" not in own:
            raise CheckpointError(path, "not an SD3 or Flux model: no MMDiT or Flux transformer weights")
        _, spec = _family(files.shapes[path], own["transformer"])
        found = _Found(path, own["transformer"])
        return _transformer(files, found, spec, _transformer_config(files, found, spec), dtype)


def load_flow_model(
    path: Path,
    modules: Sequence[Path] = (),
    text_encoder_dirs: Sequence[Path] = (),
    vae_dirs: Sequence[Path] = (),
    dtype: torch.dtype = torch.float32,
) -> FlowParts:
    """Load an SD3 or Flux model whose denoiser is in `path` (see the module docstring)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    with ExitStack() as stack:
        files = _Files(stack)
        own = _parts_in(files.add(path), path.name)
        if "transformer" not in own:
            raise CheckpointError(path, "not an SD3 or Flux model: no MMDiT or Flux transformer weights")
        family, spec = _family(files.shapes[path], own["transformer"])
        found = {part: _Found(path, prefix) for part, prefix in own.items()}
        for extra in modules:
            for part, prefix in _parts_in(files.add(extra), extra.name).items():
                if part != "transformer":
                    found[part] = _Found(extra, prefix)
        needed = ["vae", "t5", *spec.clip_parts]
        for part in needed:
            if part in found:
                continue
            for candidate in _search(vae_dirs if part == "vae" else text_encoder_dirs, part):
                if part in _parts_in(files.add(candidate), candidate.name):
                    found[part] = _Found(candidate, _parts_in(files.shapes[candidate], candidate.name)[part])
                    break
            else:
                folders = vae_dirs if part == "vae" else text_encoder_dirs
                where = (
                    str(folders[0])
                    if folders
                    else ("the VAE folder" if part == "vae" else "the text encoder folder")
                )
                raise CheckpointError(
                    path,
                    f"has no {part.upper().replace('_', '-')} weights: add {PART_FILES[part]} to {where}",
                )
        sources = {part: f.path for part, f in found.items() if part in needed or part == "transformer"}

        t_found = found["transformer"]
        t_cfg = _transformer_config(files, t_found, spec)
        text: dict[str, dict[str, Any]] = {}
        try:
            text["t5"] = flow_infer.t5_config(files.shapes[found["t5"].path], found["t5"].prefix)
            for part in spec.clip_parts:  # CLIP-L uses quick GELU, OpenCLIP bigG plain GELU
                text[part] = flow_infer.clip_text_config(
                    files.shapes[found[part].path],
                    found[part].prefix + "text_model.",
                    "quick_gelu" if part == "clip_l" else "gelu",
                )
        except ShapeError as e:
            raise CheckpointError(path, str(e)) from e
        _check_widths(spec, t_cfg, text, sources)

        transformer = _transformer(files, t_found, spec, t_cfg, dtype)

        v_found = found["vae"]
        v_shapes = {
            k[len(v_found.prefix) :]: s
            for k, s in files.shapes[v_found.path].items()
            if k.startswith(v_found.prefix)
        }
        scale, shift = family.latent.scaling_factor, family.latent.shift_factor
        v_base = {
            "sample_size": 1024,
            "norm_num_groups": 32,
            "act_fn": "silu",
            "scaling_factor": scale,
            "shift_factor": shift,
            "force_upcast": True,
            "use_quant_conv": "quant_conv.weight" in v_shapes,
            "use_post_quant_conv": "post_quant_conv.weight" in v_shapes,
        }
        v_cfg = vae_config(v_shapes, v_base, "")
        if v_cfg["latent_channels"] != t_cfg["in_channels"] // spec.tokens_per_cell:
            raise CheckpointError(
                v_found.path,
                f"a {v_cfg['latent_channels']}-channel VAE cannot decode this {spec.label.upper()} model's "
                f"{family.latent.channels}-channel latents",
            )
        v_raw = {"vae." + k: v for k, v in files.read(v_found, dtype).items()}
        convert: Any = convert_ldm_vae_checkpoint
        vae = _build(AutoencoderKL, v_cfg, convert(v_raw, v_cfg), "VAE", v_found.path)

        t5_sd = files.read(found["t5"], dtype)
        t5_sd.setdefault("encoder.embed_tokens.weight", t5_sd["shared.weight"])
        t5 = _build(T5EncoderModel, T5Config(**text["t5"]), t5_sd, "T5", found["t5"].path)

        def clip(part: str, with_projection: bool) -> Any:
            short = {k.removeprefix("text_model."): v for k, v in files.read(found[part], dtype).items()}
            cfg = CLIPTextConfig(**text[part])
            if with_projection:  # SD3 reads CLIP-L's pooled output unprojected: identity when absent
                short.setdefault("text_projection.weight", torch.eye(cfg.hidden_size, dtype=dtype))
            cls: Any = CLIPTextModelWithProjection if with_projection else CLIPTextModel
            with init_empty_weights():
                wanted = cls(cfg).state_dict()
            state = {
                k: short[k.removeprefix("text_model.")]
                for k in wanted
                if k.removeprefix("text_model.") in short
            }
            return _build(
                cls,
                cfg,
                state,
                part.upper(),
                found[part].path,
                ["text_model.embeddings.position_ids", "embeddings.position_ids"],
            )

        clip_l = clip("clip_l", spec.projected("clip_l"))
        clip_g = clip("clip_g", True) if "clip_g" in spec.clip_parts else None
    return FlowParts(
        family=family.group,
        variant=family.arch,
        transformer=transformer,
        vae=vae,
        clip_l=clip_l,
        clip_g=clip_g,
        t5=t5,
        tokenizer=clip_tokenizer(EOS_TOKEN),
        tokenizer_2=clip_tokenizer(OPENCLIP_PAD_TOKEN) if clip_g is not None else None,
        t5_tokenizer=t5_tokenizer(family.text.t5_length),
        scheduler_config=dict(spec.scheduler),
        sources=sources,
    )
