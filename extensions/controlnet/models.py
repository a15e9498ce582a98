"""ControlNet files in models/ControlNet: listing with A1111 short hashes, and loading.

Listing follows sd-webui-controlnet: every model file (and diffusers folder) under `models/ControlNet`,
`annotators/` left out, titled `name [hash]` where the hash is A1111's legacy model hash (8 hex digits
of the sha256 of 64 KiB read at offset 1 MiB: cheap, so nothing is cached). API clients send that
title (`control_v11p_sd15_canny [d14c016b]`), the bare name, or "None".

Loading (ControlNets here, SD3 / Flux ones with flow_layout.py, T2I-Adapters with adapter.py) reads
the file safely (safetensors, or a pickle through `torch.load(weights_only=True)`), renames an
original-layout file to diffusers' layout, builds the config from the tensors (and from the base
model's UNet or transformer config when given) and fills a model created without weights, so a real
1.4 GB ControlNet is never initialised at random first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.plugins.api import CheckpointError, load_state_dict

from . import adapter, control_lora, ipadapter
from .flow_layout import config_for, refusal, wired, xlabs_to_diffusers
from .layout import ControlNetFileError, base_of, check_compatible, foreign_kind, infer_config, to_diffusers

_FOREIGN_CLASSES = {  # a diffusers folder's config.json `_class_name`
    "SD3ControlNetModel": ("SD3", "SD3ControlNetModel"),
    "SD3MultiControlNetModel": ("SD3", "SD3ControlNetModel"),
    "FluxControlNetModel": ("Flux", "FluxControlNetModel"),
    "FluxMultiControlNetModel": ("Flux", "FluxControlNetModel"),
}

FOLDER = "ControlNet"
IP_FOLDER = "ipadapter"  # ComfyUI's folder for IP-Adapters (sd-webui-controlnet keeps them in ControlNet/)
ANNOTATORS = "annotators"
SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_HASH_OFFSET = 0x100000
_HASH_BYTES = 0x10000


@dataclass(frozen=True)
class ControlNetFile:
    name: str  # the file name without its suffix (a folder's name)
    path: Path  # the weights file
    short_hash: str

    @property
    def title(self) -> str:
        """What sd-webui-controlnet lists and clients send: `name [hash]`."""
        return f"{self.name} [{self.short_hash}]"


def legacy_hash(path: Path) -> str:
    """A1111's old 8-digit model hash, which sd-webui-controlnet shows beside ControlNet names."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(_HASH_OFFSET)
        h.update(f.read(_HASH_BYTES))
    return h.hexdigest()[:8]


def _folder_weights(folder: Path) -> Path | None:
    """The weights file of a diffusers ControlNet folder (config.json beside it), if it is one."""
    if not (folder / "config.json").is_file():
        return None
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def list_models(models_dir: Path) -> list[ControlNetFile]:
    """Every ControlNet, T2I-Adapter and IP-Adapter under `models_dir/ControlNet` and
    `models_dir/ipadapter`, sorted by name (case-insensitive)."""
    out: list[ControlNetFile] = []
    for folder in (FOLDER, IP_FOLDER):
        if (models_dir / folder).is_dir():
            out += _listed(models_dir / folder)
    return sorted(out, key=lambda m: (m.name.lower(), m.title))


def _listed(root: Path) -> list[ControlNetFile]:
    out: list[ControlNetFile] = []
    folders = {p.parent for p in root.rglob("config.json") if _folder_weights(p.parent) is not None}
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if rel[0] == ANNOTATORS or any(f in p.parents for f in folders):
            continue
        if p in folders:
            weights = _folder_weights(p)
            assert weights is not None
            out.append(ControlNetFile(p.name, weights, legacy_hash(weights)))
        elif p.is_file() and p.suffix.lower() in SUFFIXES:
            out.append(ControlNetFile(p.stem, p, legacy_hash(p)))
    return out


def _folder_config(path: Path) -> dict[str, Any] | None:
    """The config.json beside a diffusers folder's weights file, if it is one (None otherwise)."""
    import json

    config = path.parent / "config.json"
    if not (path.name.startswith("diffusion_pytorch_model") and config.is_file()):
        return None
    try:
        out = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def foreign_family(model: ControlNetFile) -> tuple[str, str] | None:
    """(family, kind) when the file is an SD3 or Flux ControlNet (layout.foreign_kind), read from the
    safetensors header or a diffusers folder's config.json (cheap: no tensor is read); None otherwise
    (pickles are not opened here; loading one tells its family the same way)."""
    from safetensors import safe_open

    config = _folder_config(model.path)
    if config is not None and config.get("_class_name") in _FOREIGN_CLASSES:
        return _folder_kind(config)
    if model.path.suffix.lower() != ".safetensors":
        return None
    try:
        with safe_open(str(model.path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # not a readable safetensors file: loading it says why
        return None
    return foreign_kind(keys)


def find_model(models: list[ControlNetFile], wanted: str) -> ControlNetFile:
    """The model a unit names: `name [hash]`, `name`, or the hash alone. KeyError when none matches."""
    wanted = wanted.strip()
    for m in models:
        if wanted in (m.title, m.name, m.short_hash):
            return m
    if wanted.endswith("]") and " [" in wanted:  # the same name with another hash: the file changed
        name = wanted[: wanted.rindex(" [")]
        for m in models:
            if m.name == name:
                return m
    raise KeyError(wanted)


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path)
    except CheckpointError as e:
        raise ControlNetFileError(f"{path.name}: {e}") from e


def _controlnet_state(sd: dict[str, torch.Tensor], name: str) -> tuple[dict[str, torch.Tensor], str]:
    if ipadapter.is_ip_adapter(sd):
        raise ControlNetFileError(
            f"{name}: an IP-Adapter, not a ControlNet; use an ip-adapter_* preprocessor"
        )
    if adapter.is_adapter(sd):
        raise ControlNetFileError(f"{name}: a T2I-Adapter, not a ControlNet")
    try:
        sd = to_diffusers(sd)
    except ControlNetFileError as e:
        raise ControlNetFileError(f"{name}: {e}") from e
    return sd, base_of(sd)


def read_controlnet(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in diffusers' layout, base family) of a ControlNet file; ControlNetFileError if it
    is not one (or not a readable, safe file)."""
    return _controlnet_state(_read(path), path.name)


def _controlnet(sd: dict[str, torch.Tensor], path: Path, unet_config: dict[str, Any] | None) -> Any:
    from diffusers import ControlNetModel

    sd, base = _controlnet_state(sd, path.name)
    try:
        cfg = infer_config(sd, unet_config)
    except (KeyError, StopIteration) as e:
        raise ControlNetFileError(f"{path.name}: not a complete ControlNet ({e})") from e
    if unet_config is not None:
        check_compatible(cfg, base, unet_config, path.stem)
    cfg["global_pool_conditions"] = global_pooling(path)
    return _filled(ControlNetModel, cfg, sd, path)


def global_pooling(path: Path) -> bool:
    """Whether the ControlNet averages its outputs over the image (the shuffle ControlNet). The weights
    do not say: the original config beside the file (`name.yaml`, `global_average_pooling`) does, and
    without one the name does, as in sd-webui-controlnet."""
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
            params = cfg["model"]["params"]["control_stage_config"]["params"]
            return bool(params.get("global_average_pooling", False))
        except (yaml.YAMLError, KeyError, TypeError, OSError, UnicodeDecodeError):
            pass
    return "shuffle" in path.stem.lower()


def _adapter(sd: dict[str, torch.Tensor], path: Path, unet_config: dict[str, Any] | None) -> Any:
    from diffusers import T2IAdapter

    sd = adapter.to_diffusers(sd)
    try:
        cfg = adapter.infer_config(sd)
    except (KeyError, IndexError) as e:
        raise ControlNetFileError(f"{path.name}: not a complete T2I-Adapter ({e})") from e
    if unet_config is not None:
        adapter.check_compatible(cfg, unet_config, path.stem)
    return _filled(T2IAdapter, cfg, sd, path)


def _filled(cls: Any, cfg: dict[str, Any], sd: dict[str, torch.Tensor], path: Path) -> Any:
    """`cls(**cfg)` created without weights (no random init of a large model), then given `sd`."""
    with torch.device("meta"):
        model = cls(**cfg)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ControlNetFileError(f"{path.name}: weights do not fit: {str(e).splitlines()[0]}") from e
    return model


def _folder_kind(config: dict[str, Any]) -> tuple[str, str]:
    family, kind = _FOREIGN_CLASSES[config["_class_name"]]
    return (family, f"Union ({kind})") if config.get("num_mode") is not None else (family, kind)


def _flow_family(sd: dict[str, torch.Tensor], path: Path) -> tuple[str, str] | None:
    config = _folder_config(path)
    if config is not None and config.get("_class_name") in _FOREIGN_CLASSES:
        return _folder_kind(config)
    return foreign_kind(sd)


def _flow_controlnet(
    sd: dict[str, torch.Tensor], path: Path, found: tuple[str, str], base: dict[str, Any] | None
) -> Any:
    """An SD3ControlNetModel / FluxControlNetModel (flow_layout.py); `base` is the job's transformer
    config when known."""
    import diffusers

    family, kind = found
    if not wired(kind):
        raise ControlNetFileError(f"{path.name}: {refusal(family, kind)}")
    try:
        if kind == "XLabs":
            sd = xlabs_to_diffusers(sd)
        cls_name, cfg = config_for(sd, family, _folder_config(path), base)
    except KeyError as e:
        raise ControlNetFileError(f"{path.name}: not a complete {family} ControlNet (no {e})") from e
    except ControlNetFileError as e:
        raise ControlNetFileError(f"{path.name}: {e}") from e
    model = _filled(getattr(diffusers, cls_name), cfg, sd, path)
    if any(t.is_meta for t in model.buffers()):
        raise ControlNetFileError(f"{path.name}: weights missing from the file (a buffer stayed empty)")
    return model


def _placed(model: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """On `device` in `dtype` (an fp16 file asked for in fp32 is converted), eval mode."""
    model = model.to(device=device)
    if any(p.dtype != dtype for p in model.parameters()):  # (diffusers warns about any dtype given to .to)
        model = model.to(dtype=dtype)
    return model.eval()


def load_controlnet(
    path: Path,
    unet_config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A diffusers `ControlNetModel` (eval mode) from a file; with `unet_config` (the base model's UNet
    config) it is checked against that model and takes its attention heads."""
    return _placed(_controlnet(_read(path), path, unet_config), device, dtype)


def load_adapter(
    path: Path,
    unet_config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A diffusers `T2IAdapter` (eval mode) from a file, checked against `unet_config` when given."""
    sd = _read(path)
    if not adapter.is_adapter(sd):
        raise ControlNetFileError(f"{path.name}: not a T2I-Adapter")
    return _placed(_adapter(sd, path, unet_config), device, dtype)


def load_control_model(
    path: Path,
    unet_config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A ControlNet (SD3 and Flux ones too: `unet_config` is then the transformer's config) or a
    T2I-Adapter, whichever the file holds (the file is read once)."""
    sd = _read(path)
    found = _flow_family(sd, path)
    if found is not None:
        return _placed(_flow_controlnet(sd, path, found, unet_config), device, dtype)
    build = _adapter if adapter.is_adapter(sd) else _controlnet
    return _placed(build(sd, path, unet_config), device, dtype)


def build_control_model(sd: dict[str, torch.Tensor], path: Path, unet_config: dict[str, Any] | None) -> Any:
    """A ControlNet, T2I-Adapter, IP-Adapter or Control-LoRA (on the CPU, as stored) from a file's
    tensors: the `build` the extension hands to `context.models.use`. For an SD3 / Flux ControlNet
    `unet_config` is the job's transformer config."""
    found = _flow_family(sd, path)
    if found is not None:
        return _flow_controlnet(sd, path, found, unet_config)
    if ipadapter.is_ip_adapter(sd):
        return ipadapter.build_ip_adapter(sd, path.name)
    if control_lora.is_control_lora(sd):  # made dense per job from the job's UNet (job.py)
        return control_lora.read(sd, path.name)
    build = _adapter if adapter.is_adapter(sd) else _controlnet
    return build(sd, path, unet_config)


def check_model(model: Any, unet_config: dict[str, Any], name: str) -> None:
    """ControlNetFileError unless a loaded ControlNet / T2I-Adapter fits a UNet with `unet_config` (a
    cached model may have been built for another checkpoint)."""
    cfg = dict(model.config)
    if "adapter_type" in cfg:
        adapter.check_compatible(cfg, unet_config, name)
        return
    if cfg.get("addition_embed_type") == "text_time":
        base = "sdxl"
    else:
        base = "sd2" if cfg.get("use_linear_projection") else "sd1"
    check_compatible(cfg, base, unet_config, name)
