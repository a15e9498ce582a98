"""The checkpoint merger (A1111's "Checkpoint Merger" tab), streaming one tensor at a time.

Methods, with A1111's names and rules:

- "No interpolation": the primary model A alone (to bake in a VAE, discard weights or save as fp16);
- "Weighted sum": A * (1 - M) + B * M;
- "Add difference": A + (B - C) * M.

As in A1111, only tensors under a model prefix (UNet, text encoders, VAE: every key containing
"model") are merged, keys only B or C has are dropped, keys A has alone are kept as they are, and a
tensor C lacks adds nothing. An inpainting (9-channel) or instruct-pix2pix (8-channel) A merges its
first four input channels with a normal B; a normal A with such a B is refused. Models of different
families (SD1 with SDXL, ...) are refused before anything is written. Sums are computed in float32 and
stored in A's dtype (or float16 with `save_as_half`); the result is always .safetensors, written
atomically, with the recipe in its metadata under A1111's keys (`sd_merge_recipe`, `sd_merge_models`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.core.models.checkpoint_file import (
    SAFETENSORS,
    CheckpointError,
    load_state_dict,
    read_safetensors_header,
    sniff_format,
)
from webui.core.models.detect import detect
from webui.core.models.safetensors_writer import DTYPE_NAMES, Planned, write_streaming

METHODS = ("No interpolation", "Weighted sum", "Add difference")
SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
VAE_PREFIX = "first_stage_model."
_TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


class MergeError(ValueError):
    """A merge that cannot be done; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MergeCancelled(Exception):
    """The merge was cancelled; nothing was written."""


@dataclass(frozen=True)
class MergeRequest:
    primary: Path
    output: Path
    method: str = "Weighted sum"
    secondary: Path | None = None
    tertiary: Path | None = None
    multiplier: float = 0.3
    save_as_half: bool = False
    bake_in_vae: Path | None = None
    discard_weights: str = ""  # a regular expression: matching keys are left out
    save_metadata: bool = True


@dataclass(frozen=True)
class MergeResult:
    path: Path
    tensors: int
    merged: int  # tensors that are a mix of the sources
    family: str


Progress = Callable[[int, int], None]  # (tensors written, total)


class _Source:
    """Tensors of one file, read lazily (safetensors memory-mapped, a tensor at a time; pickles once)."""

    def __init__(self, path: Path, stack: ExitStack) -> None:
        self.path = path
        self._open: Any = None
        self._sd: Mapping[str, torch.Tensor] | None = None
        if sniff_format(path) == SAFETENSORS:
            from safetensors import safe_open

            header = read_safetensors_header(path)
            self.meta = {k: (_TORCH_DTYPES[m.dtype], m.shape) for k, m in header.items()}
            self._open = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
        else:
            self._sd = load_state_dict(path)
            self.meta = {k: (v.dtype, tuple(v.shape)) for k, v in self._sd.items()}
        self.shapes = {k: shape for k, (_, shape) in self.meta.items()}

    def __contains__(self, key: str) -> bool:
        return key in self.meta

    def get(self, key: str) -> torch.Tensor:
        if self._sd is not None:
            return self._sd[key]
        return self._open.get_tensor(key)  # type: ignore[no-any-return]


def _check(request: MergeRequest) -> None:
    if request.method not in METHODS:
        raise MergeError("method", f"unknown method {request.method!r}; valid: {', '.join(METHODS)}")
    if not 0.0 <= request.multiplier <= 1.0:
        raise MergeError("multiplier", f"must be between 0 and 1, got {request.multiplier}")
    needs = {
        "No interpolation": (),
        "Weighted sum": ("secondary",),
        "Add difference": ("secondary", "tertiary"),
    }
    for name in needs[request.method]:
        if getattr(request, name) is None:
            raise MergeError(name, f"{request.method!r} needs a {name} model")
    if request.output.suffix.lower() != ".safetensors":
        raise MergeError("output", "merged models are written as .safetensors")
    if request.output.exists():
        raise MergeError("output", f"{request.output.name} already exists; choose another name")
    for name in ("primary", "secondary", "tertiary", "bake_in_vae"):
        path = getattr(request, name)
        if path is not None and path.resolve() == request.output.resolve():
            raise MergeError("output", f"would overwrite the {name} model")
    if request.discard_weights:
        try:
            re.compile(request.discard_weights)
        except re.error as e:
            raise MergeError("discard_weights", f"not a valid regular expression: {e}") from e


def _family(source: _Source, field: str) -> tuple[str, int]:
    """The source's family and UNet input channels (4, 8 or 9)."""
    try:
        det = detect(source.path, source.shapes)
    except CheckpointError as e:
        raise MergeError(field, str(e)) from e
    conv_in = source.shapes.get("model.diffusion_model.input_blocks.0.0.weight", (0, 4))
    return det.family, conv_in[1]


def _sources_agree(a: _Source, others: dict[str, _Source]) -> str:
    family, channels = _family(a, "primary")
    for field, src in others.items():
        fam, ch = _family(src, field)
        if fam != family:
            raise MergeError(
                field,
                f"{src.path.name} is {fam.upper()}, the primary model is {family.upper()}: "
                "models of different families cannot be merged",
            )
        if field == "secondary" and ch != channels and channels == 4:
            kind = "inpainting" if ch == 9 else "instruct-pix2pix"
            raise MergeError(
                field, f"to merge an {kind} model with a normal one, the {kind} model must be the primary"
            )
    return family


def _vae_tensors(path: Path, primary: _Source) -> dict[str, torch.Tensor]:
    """The VAE file's tensors under the checkpoint's VAE prefix; they must fit the primary's VAE."""
    sd = load_state_dict(path)
    out = {(k if k.startswith(VAE_PREFIX) else VAE_PREFIX + k): v for k, v in sd.items()}
    if not any(k.startswith(VAE_PREFIX + "decoder.") for k in out):
        raise MergeError("bake_in_vae", f"{path.name} holds no VAE decoder weights")
    own = {k: shape for k, shape in primary.shapes.items() if k.startswith(VAE_PREFIX)}
    wrong = sorted(k for k, v in out.items() if k in own and tuple(v.shape) != own[k])
    if own and (wrong or not set(own) <= set(out)):
        detail = f"{wrong[0]} has another shape" if wrong else f"it lacks {sorted(set(own) - set(out))[0]}"
        raise MergeError(
            "bake_in_vae",
            f"{path.name} does not fit {primary.path.name}'s VAE ({detail}): a VAE of another family, "
            "or not in the original (LDM) layout",
        )
    return out


def _mix(request: MergeRequest, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    m = request.multiplier
    a32, b32 = a.float(), b.float()
    if request.method == "Weighted sum":
        return a32 * (1.0 - m) + b32 * m
    return a32 + (b32 - (c.float() if c is not None else b32)) * m


def merge_checkpoints(
    request: MergeRequest,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> MergeResult:
    """Write the merged model to `request.output`; nothing is written when any check fails.

    `metadata` adds string metadata (the caller's recipe with model names and hashes).
    """
    _check(request)
    with ExitStack() as stack:
        a = _Source(request.primary, stack)
        others = {
            f: _Source(p, stack)
            for f, p in (("secondary", request.secondary), ("tertiary", request.tertiary))
            if p is not None and request.method != "No interpolation"
        }
        family = _sources_agree(a, others)
        b, c = others.get("secondary"), others.get("tertiary")
        vae = _vae_tensors(request.bake_in_vae, a) if request.bake_in_vae is not None else {}
        discard = re.compile(request.discard_weights) if request.discard_weights else None
        keys = [k for k in a.shapes if not (vae and k.startswith(VAE_PREFIX))] + sorted(vae)
        keys = [k for k in keys if discard is None or not discard.search(k)]

        def mixed(key: str) -> bool:
            return (
                b is not None and "model" in key and key in b and key not in SKIP_ON_MERGE and key not in vae
            )

        def tensor(key: str) -> torch.Tensor:
            if key in vae:
                return vae[key]
            t = a.get(key)
            if not mixed(key) or not t.is_floating_point():
                return t
            assert b is not None
            bt = b.get(key)
            ct = c.get(key) if c is not None and key in c else None
            if ct is not None and ct.shape != bt.shape:
                raise MergeError("tertiary", f"{key}: shape {tuple(ct.shape)} differs from {tuple(bt.shape)}")
            if t.shape == bt.shape:
                return _mix(request, t, bt, ct)
            if t.shape[:1] + t.shape[2:] == bt.shape[:1] + bt.shape[2:] and t.ndim == 4 and bt.shape[1] == 4:
                out = t.float().clone()  # inpainting / pix2pix A: mix the four latent channels both have
                out[:, :4] = _mix(request, t[:, :4], bt, ct)
                return out
            raise MergeError(
                "secondary", f"{key}: shape {tuple(bt.shape)} does not fit the primary's {tuple(t.shape)}"
            )

        def planned(key: str) -> Planned:
            dtype, shape = (vae[key].dtype, tuple(vae[key].shape)) if key in vae else a.meta[key]
            if request.save_as_half and dtype.is_floating_point:
                dtype = torch.float16
            return Planned(key, dtype, shape)

        plan = [planned(k) for k in keys]
        written = 0
        merged = sum(1 for k in keys if mixed(k))

        def produce(item: Planned) -> torch.Tensor:
            nonlocal written
            if cancelled is not None and cancelled():
                raise MergeCancelled()
            out = tensor(item.name).to(item.dtype)
            written += 1
            if progress is not None:
                progress(written, len(plan))
            return out

        meta = dict(metadata or {}) if request.save_metadata else {}
        if request.save_metadata:
            meta.setdefault("format", "pt")
            meta.setdefault("sd_merge_recipe", json.dumps(recipe(request)))
        write_streaming(request.output, plan, produce, meta)
    return MergeResult(request.output, len(plan), merged, family)


def recipe(request: MergeRequest) -> dict[str, Any]:
    """A1111's `sd_merge_recipe` fields (file names where A1111 writes hashes the caller may add)."""

    def name(p: Path | None) -> str | None:
        return p.name if p is not None else None

    return {
        "type": "webui",
        "primary_model": name(request.primary),
        "secondary_model": name(request.secondary),
        "tertiary_model": name(request.tertiary),
        "interp_method": request.method,
        "multiplier": request.multiplier,
        "save_as_half": request.save_as_half,
        "custom_name": request.output.stem,
        "bake_in_vae": name(request.bake_in_vae),
        "discard_weights": request.discard_weights,
    }
