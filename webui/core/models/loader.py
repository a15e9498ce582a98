"""Turning a checkpoint on disk into ready components, offline.

Single files: our own reader (magic bytes, bounded header, weights-only pickles), our architecture
detection and shape-sized configs, diffusers' LDM converters for the UNet and VAE (always given a local
config, never the Hub), our own text-encoder mapping. Diffusers folders: `from_pretrained` with
`local_files_only=True`. Either way no parameter may be left on the meta device.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from webui.core.models import configs
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict
from webui.core.models.components import Components, Precision
from webui.core.models.detect import UNET, Detected, detect, detect_folder, read_sidecar_yaml
from webui.core.models.flow_components import (
    FLOW_PIPELINES,
    detect_flow_file,
    load_flow_components,
    load_flow_folder,
)
from webui.core.models.infer import ShapeError, text_config, text_encoder_prefixes, unet_config, vae_config
from webui.core.models.text_layout import clip_from_ldm, openclip_from_ldm
from webui.core.models.tokenizer import clip_tokenizer

VAE_PREFIX = "first_stage_model."


def _write_config_dir(root: Path, component_configs: Mapping[str, Mapping[str, Any]]) -> None:
    for name, cfg in component_configs.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.json").write_text(json.dumps(cfg), encoding="utf-8")


def _check_no_meta(path: Path, module: torch.nn.Module, what: str) -> None:
    missing = [n for n, p in module.named_parameters() if p.is_meta]
    if missing:
        raise CheckpointError(path, f"{what} weights missing from the file: {', '.join(missing[:5])}")


def _check_all_used(sd: Mapping[str, torch.Tensor], prefix: str, module: Any, what: str) -> None:
    """Every weight under `prefix` must have landed in the model: diffusers only logs unused keys."""
    in_file = sum(t.numel() for k, t in sd.items() if k.startswith(prefix))
    in_model = sum(p.numel() for p in module.parameters())
    if in_file != in_model:
        raise ShapeError(f"{what} holds {in_model:,} weights but the file has {in_file:,} under {prefix!r}")


def _text_model(layout: str, cfg: dict[str, Any], sd: Mapping[str, torch.Tensor], prefix: str) -> Any:
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if layout == "clip":
        hf = clip_from_ldm(sd, prefix)
    else:
        hf = openclip_from_ldm(sd, prefix, num_layers=cfg["num_hidden_layers"])
    with_proj = "text_projection.weight" in hf
    cls = CLIPTextModelWithProjection if with_proj else CLIPTextModel
    with init_empty_weights():
        model: Any = cls(CLIPTextConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)}))
    wanted = model.state_dict()
    state = {}
    for key in wanted:
        short = key.removeprefix("text_model.")
        if short not in hf:
            raise ShapeError(f"text encoder tensor {prefix}{short} is missing")
        state[key] = hf[short]
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model


def _pipeline_class(det: Detected) -> str:
    return det.arch.pipeline_class_for(det.inpaint)


def load_single_file(path: Path, precision: Precision) -> Components:
    """Load a `.safetensors`/`.ckpt` checkpoint in the original (A1111) layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    sd = load_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    det = detect(path, shapes, read_sidecar_yaml(path))
    arch = det.base_config
    try:
        te_layouts = text_encoder_prefixes(det)
        te_cfgs = {
            comp: text_config(shapes, configs.load_component_config(arch, comp), layout, prefix)
            for comp, (layout, prefix) in te_layouts.items()
        }
        proj = te_cfgs.get("text_encoder_2", {}).get("projection_dim")
        unet_cfg = unet_config(shapes, configs.load_component_config(arch, "unet"), det, proj)
        vae_cfg = vae_config(shapes, configs.load_component_config(arch, "vae"), VAE_PREFIX)
        with tempfile.TemporaryDirectory(prefix="sfumato-config-") as tmp:
            _write_config_dir(Path(tmp), {"unet": unet_cfg, "vae": vae_cfg})
            kw: dict[str, Any] = dict(config=tmp, local_files_only=True)
            unet = UNet2DConditionModel.from_single_file(sd, subfolder="unet", **kw)
            vae = AutoencoderKL.from_single_file(sd, subfolder="vae", **kw)
        _check_all_used(sd, UNET, unet, "UNet")
        _check_all_used(sd, VAE_PREFIX, vae, "VAE")
        encoders = {
            comp: _text_model(layout, te_cfgs[comp], sd, prefix)
            for comp, (layout, prefix) in te_layouts.items()
        }
    except (ShapeError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, f"does not fit the {det.label} architecture: {e}") from e
    tokenizers = _tokenizers(arch, "text_encoder" in encoders, "text_encoder_2" in encoders)
    scheduler_cfg = dict(configs.load_component_config(arch, "scheduler"))
    scheduler_cfg["prediction_type"] = det.prediction_type
    parts = Components(
        arch=arch,
        label=det.label,
        pipeline_class=_pipeline_class(det),
        unet=unet,
        vae=vae,
        text_encoder=encoders.get("text_encoder"),
        text_encoder_2=encoders.get("text_encoder_2"),
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        scheduler_config=scheduler_cfg,
    )
    for name, module in parts.modules().items():
        _check_no_meta(path, module, name)
    return parts.to(precision)


def _tokenizers(arch: str, has_te: bool, has_te2: bool) -> tuple[Any, Any]:
    """Our shipped tokenizer for both paths, so a model tokenizes the same from a file or a folder."""
    tok = clip_tokenizer(configs.pad_token_for(arch, "tokenizer")) if has_te else None
    tok2 = clip_tokenizer(configs.pad_token_for(arch, "tokenizer_2")) if has_te2 else None
    return tok, tok2


def load_diffusers_folder(folder: Path, precision: Precision) -> Components:
    """Load a diffusers-format folder (model_index.json + component subfolders), offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(folder, f"unreadable model_index.json: {e}") from e
    if index.get("_class_name") in FLOW_PIPELINES:
        return load_flow_folder(folder, precision)
    kw: dict[str, Any] = dict(local_files_only=True)
    try:
        unet: Any = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)  # type: ignore[no-untyped-call]
        vae: Any = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)  # type: ignore[no-untyped-call]
        te: Any = (
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)
            if index.get("text_encoder")
            else None
        )
        te2: Any = (
            CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **kw)
            if index.get("text_encoder_2")
            else None
        )
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(folder, f"incomplete diffusers folder: {str(e).splitlines()[0]}") from e
    det = detect_folder(
        te is not None,
        te2 is not None,
        te.config.hidden_act if te is not None else None,
        unet.config.in_channels,
        sched.get("prediction_type", "epsilon"),
    )
    tok, tok2 = _tokenizers(det.base_config, te is not None, te2 is not None)
    parts = Components(
        arch=det.base_config,
        label=det.label,
        pipeline_class=str(index.get("_class_name", _pipeline_class(det))),
        unet=unet,
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok2,
        scheduler_config=sched,
    )
    for name, module in parts.modules().items():
        _check_no_meta(folder, module, name)
    return parts.to(precision)


def load_model(
    path: Path,
    precision: Precision,
    text_encoder_dirs: Sequence[Path] = (),
    vae_dirs: Sequence[Path] = (),
    modules: Sequence[Path] = (),
) -> Components:
    """Load a checkpoint file or a diffusers folder. SD3 and Flux files may hold their transformer
    only: their text encoders and VAE then come from `modules` (files the user picked), else from
    `text_encoder_dirs` and `vae_dirs`. Other models take no modules (a CheckpointError says so)."""
    flow = not path.is_dir() and detect_flow_file(path) is not None
    if modules and not flow:
        raise CheckpointError(
            path, "takes no modules: only single-file SD3 and Flux models are assembled from them"
        )
    if path.is_dir():
        return load_diffusers_folder(path, precision)
    if flow:
        return load_flow_components(path, precision, text_encoder_dirs, vae_dirs, modules)
    return load_single_file(path, precision)
