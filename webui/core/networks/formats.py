"""Network file formats -> per-module weight patches, and our model's modules under every naming.

Keys seen in the wild, all read here:

- kohya / A1111: `lora_unet_<module>`, `lora_te_<module>` (SDXL: `lora_te1_`, `lora_te2_`), module names
  flattened with `_`; the UNet in diffusers names (SD1/SD2 trainers) or in the original LDM names
  (SDXL trainers: `lora_unet_input_blocks_4_1_...`). Parts `.lora_down.weight`, `.lora_up.weight`,
  `.alpha`, LyCORIS LoCon's `.lora_mid.weight` (Tucker), LoHa `.hada_w{1,2}_{a,b}` / `.hada_t{1,2}`,
  LoKr `.lokr_w{1,2}[_a|_b]` / `.lokr_t2`, full `.diff` / `.diff_b`, norms `.w_norm` / `.b_norm`.
- diffusers / peft: `unet.<module>.lora_A.weight` / `.lora_B.weight` (or `.lora.down.weight` /
  `.lora.up.weight`, older `.processor.to_q_lora.down.weight`), `text_encoder.` / `text_encoder_2.`.

Flux and SD3 / SD3.5 (the denoiser is their transformer, the component stays "unet"):
- kohya: `lora_unet_double_blocks_0_img_attn_qkv`, `lora_unet_single_blocks_0_linear1` (Flux),
  `lora_unet_joint_blocks_0_x_block_attn_qkv` (SD3): the original layouts, whose fused q/k/v (and a
  single block's MLP input) are several diffusers modules; `lora_te1_` CLIP-L, `lora_te2_` CLIP-G,
  `lora_te3_` T5. The family's `original_names` say which modules a name stands for: each gets its own
  rows of the delta (`RowSlice`), so `up[rows] @ down` for a LoRA.
- diffusers / peft: `transformer.transformer_blocks.0.attn.to_q.lora_A.weight` (diffusers names);
  `diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight` (ComfyUI's, original names).

Every module is keyed by (component, flat name): the dotted module name with `.` -> `_`, and for text
encoders without a leading `text_model_` (transformers 5's CLIPTextModel has no such level, the
with-projection model and most files do). A patch's delta is `scale * W_delta` with scale = alpha / rank
when the file gives alpha (LoKr with both factors full: 1), as A1111 and LyCORIS compute it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from webui.core import families
from webui.core.models.fused_layout import swap_halves
from webui.core.networks.peft_meta import PeftConfigs

UNET, TE1, TE2, TE3 = "unet", "text_encoder", "text_encoder_2", "text_encoder_3"
COMPONENTS = (UNET, TE1, TE2, TE3)  # UNET is the denoiser: the UNet, or a flow model's transformer
TEXT_ENCODERS = (TE1, TE2, TE3)

_PREFIXES = (
    ("lora_unet_", UNET),
    ("lora_te1_", TE1),
    ("lora_te2_", TE2),
    ("lora_te3_", TE3),
    ("lora_te_", TE1),
    ("lora_transformer_", UNET),
    ("unet.", UNET),
    ("transformer.", UNET),
    ("diffusion_model.", UNET),
    ("text_encoder_2.", TE2),
    ("text_encoder_3.", TE3),
    ("text_encoder.", TE1),
    ("base_model.model.", UNET),
)
# file suffix -> part name; weight parts decide the kind, `alpha`/`dora_scale`/`diff_b` go along
_PARTS = {
    ".lora_down.weight": "lora_down",
    ".lora_up.weight": "lora_up",
    ".lora_mid.weight": "lora_mid",
    ".lora_A.weight": "lora_down",
    ".lora_B.weight": "lora_up",
    ".lora.down.weight": "lora_down",
    ".lora.up.weight": "lora_up",
    ".hada_w1_a": "hada_w1_a",
    ".hada_w1_b": "hada_w1_b",
    ".hada_w2_a": "hada_w2_a",
    ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1",
    ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1",
    ".lokr_w1_a": "lokr_w1_a",
    ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2",
    ".lokr_w2_a": "lokr_w2_a",
    ".lokr_w2_b": "lokr_w2_b",
    ".lokr_t2": "lokr_t2",
    ".diff": "diff",
    ".w_norm": "diff",
    ".diff_b": "diff_b",
    ".b_norm": "diff_b",
    ".alpha": "alpha",
    ".dora_scale": "dora_scale",
}
_SUFFIXES = sorted(_PARTS, key=len, reverse=True)  # ".lora_down.weight" before ".weight"-less parts
_OLD_DIFFUSERS = (
    (re.compile(r"\.processor\.(to_q|to_k|to_v)_lora\."), r".\1.lora."),
    (re.compile(r"\.processor\.to_out_lora\."), ".to_out.0.lora."),
    (re.compile(r"\.lora_linear_layer\."), ".lora."),
    (re.compile(r"\.(lora_[AB])\.default\."), r".\1."),
)


class FormatError(ValueError):
    """A network file holds nothing this module can apply."""


def flat_name(component: str, dotted: str) -> str:
    """The key a module goes by: `_`-joined, text encoders without their `text_model` level."""
    flat = dotted.replace(".", "_")
    return flat.removeprefix("text_model_") if component != UNET else flat


@dataclass(frozen=True)
class ModulePatch:
    """The parts a file holds for one module; `delta()` rebuilds the weight change they describe."""

    kind: str  # "lora" | "loha" | "lokr" | "full"
    parts: Mapping[str, Tensor]
    alpha: float | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.parts.values())

    def _get(self, name: str) -> Tensor | None:
        return self.parts.get(name)

    def _dim(self) -> int | None:
        """The rank alpha is divided by (A1111: lora_down rows, hada_w1_b rows, lokr w1b/w2b rows)."""
        if self.kind == "lora":
            return int(self.parts["lora_down"].shape[0])
        if self.kind == "loha":
            return int(self.parts["hada_w1_b"].shape[0])
        for name in ("lokr_w1_b", "lokr_w2_b"):
            t = self._get(name)
            if t is not None:
                return int(t.shape[0])
        return None

    @property
    def scale(self) -> float:
        dim = self._dim()
        return self.alpha / dim if self.alpha is not None and dim else 1.0

    def out_features(self) -> int | None:
        """The output size the patch is for (the target weight's first dimension), None if unknown."""
        p = self.parts
        if self.kind == "lora":
            return int(p["lora_up"].shape[0])
        if self.kind == "loha":
            return int(p["hada_w1_a"].shape[1 if "hada_t1" in p else 0])
        if self.kind == "lokr":
            w1 = p.get("lokr_w1", p.get("lokr_w1_a"))
            w2 = p.get("lokr_w2", p.get("lokr_w2_a"))
            if w1 is None or w2 is None or "lokr_t2" in p:
                return None
            return int(w1.shape[0] * w2.shape[0])
        return None

    def fits(self, weight_shape: torch.Size | tuple[int, ...], bias: bool) -> bool:
        """Whether the delta can be laid onto a weight of this shape: checked before anything changes, by
        rebuilding it on the meta device (shapes only, no arithmetic), so a malformed file fails here."""
        db = self.parts.get("diff_b")
        if db is not None and bias and db.numel() != weight_shape[0]:
            return False
        if self.kind == "full" and "diff" not in self.parts:
            return bias
        out = self.out_features()
        if out is not None and out != weight_shape[0]:
            return False
        try:
            return self._weight(torch.device("meta")).numel() == math.prod(weight_shape)
        except (RuntimeError, ValueError, IndexError):
            return False

    def _weight(self, device: torch.device) -> Tensor:
        f = {k: v.to(device=device, dtype=torch.float32) for k, v in self.parts.items() if k != "dora_scale"}
        if self.kind == "lora":
            up, down = f["lora_up"].flatten(1), f["lora_down"].flatten(1)
            if "lora_mid" in f:
                return torch.einsum("n m k l, i n, m j -> i j k l", f["lora_mid"], up, down)
            return up @ down
        if self.kind == "loha":
            return _hada(f, "1") * _hada(f, "2")
        if self.kind == "lokr":
            w1 = f.get("lokr_w1")
            if w1 is None:
                w1 = f["lokr_w1_a"] @ f["lokr_w1_b"]
            w2 = f.get("lokr_w2")
            if w2 is None:
                w2 = (
                    _tucker(f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
                    if "lokr_t2" in f
                    else f["lokr_w2_a"] @ f["lokr_w2_b"]
                )
            if w2.ndim == 4:
                w1 = w1[:, :, None, None]
            return torch.kron(w1, w2.contiguous())
        return f["diff"]

    def delta(self, weight_shape: torch.Size, device: torch.device) -> Tensor | None:
        """The float32 weight change (scale included, multiplier not), shaped like the weight."""
        if "diff" not in self.parts and self.kind == "full":
            return None
        return (self._weight(device) * self.scale).reshape(weight_shape)

    def bias_delta(self, device: torch.device) -> Tensor | None:
        b = self.parts.get("diff_b")
        return None if b is None else b.to(device=device, dtype=torch.float32)


def _tucker(t: Tensor, wa: Tensor, wb: Tensor) -> Tensor:
    """LyCORIS' Tucker rebuild: t (r, r, k, k), wa (r, out), wb (r, in) -> (out, in, k, k)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def _hada(f: Mapping[str, Tensor], n: str) -> Tensor:
    t = f.get(f"hada_t{n}")
    if t is not None:
        return _tucker(t, f[f"hada_w{n}_a"], f[f"hada_w{n}_b"])
    return f[f"hada_w{n}_a"] @ f[f"hada_w{n}_b"]


_REQUIRED = {
    "lora": (("lora_down", "lora_up"),),
    "loha": (("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),),
    "lokr": (("lokr_w1",), ("lokr_w1_a", "lokr_w1_b")),  # and one of the w2 forms, checked below
    "full": (("diff",), ("diff_b",)),
}


def _kind(parts: Mapping[str, Tensor]) -> str | None:
    """The patch kind the parts describe, None when incomplete."""
    for kind, prefix in (("lora", "lora_"), ("loha", "hada_"), ("lokr", "lokr_"), ("full", "diff")):
        if any(k.startswith(prefix) for k in parts):
            if not any(all(r in parts for r in req) for req in _REQUIRED[kind]):
                return None
            if kind == "lokr" and not ("lokr_w2" in parts or {"lokr_w2_a", "lokr_w2_b"} <= parts.keys()):
                return None
            return kind
    return None


def split_key(key: str) -> tuple[str, str, str] | None:
    """`lora_unet_x_y.lora_down.weight` -> ("unet", "x_y", "lora_down"); None for keys we do not read."""
    found = _split(key)
    return None if found is None else (found[0], flat_name(found[0], found[1]), found[2])


def _split(key: str) -> tuple[str, str, str] | None:
    """(component, module name as the file writes it, part): dotted for diffusers/peft keys."""
    for pattern, repl in _OLD_DIFFUSERS:
        key = pattern.sub(repl, key)
    part = next((s for s in _SUFFIXES if key.endswith(s)), None)
    if part is None:
        return None
    module = key[: -len(part)]
    for prefix, component in _PREFIXES:
        if module.startswith(prefix):
            return component, module[len(prefix) :], _PARTS[part]
    return None


@dataclass(frozen=True)
class ParsedNetwork:
    """A network file's patches by (component, flat module name), and what could not be read."""

    patches: Mapping[tuple[str, str], ModulePatch]
    ignored: tuple[str, ...] = ()  # keys or modules left out, for messages
    uses_dora: bool = False

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.patches.values())


def parse_state_dict(sd: Mapping[str, Tensor], peft: PeftConfigs | None = None) -> ParsedNetwork:
    """Group a file's tensors into module patches. FormatError when no key is a network key.

    `peft` (the file's peft LoraConfig, from its metadata) gives the alpha of modules that have no
    `.alpha` tensor."""
    groups: dict[tuple[str, str], dict[str, Tensor]] = {}
    dotted: dict[tuple[str, str], str] = {}
    ignored: list[str] = []
    for key, tensor in sd.items():
        split = _split(key)
        if split is None:
            ignored.append(key)
            continue
        component, name, part = split
        module = flat_name(component, name)
        groups.setdefault((component, module), {})[part] = tensor
        dotted.setdefault((component, module), name)
    if not groups:
        sample = ", ".join(list(sd)[:3]) or "no tensors"
        raise FormatError(f"no LoRA/LyCORIS keys found (first keys: {sample})")
    patches: dict[tuple[str, str], ModulePatch] = {}
    dora = False
    for target, parts in groups.items():
        dora = dora or "dora_scale" in parts
        alpha_t = parts.pop("alpha", None)
        kind = _kind(parts)
        if kind is None:
            ignored.append(f"{target[0]}:{target[1]} (incomplete: {', '.join(sorted(parts))})")
            continue
        alpha = float(alpha_t.float().reshape(-1)[0]) if alpha_t is not None and alpha_t.numel() else None
        if alpha is None and peft is not None and kind == "lora":
            alpha = peft.alpha_for(target[0], dotted[target], int(parts["lora_down"].shape[0]))
        patches[target] = ModulePatch(kind, dict(parts), alpha)
    return ParsedNetwork(patches, tuple(ignored), dora)


@dataclass(frozen=True)
class RowSlice:
    """One diffusers module's share of a patch written for a fused original weight: rows [start, stop)
    of the delta for `fused_shape`, after swapping its halves when the original stores them the other
    way round ((shift, scale) for diffusers' (scale, shift))."""

    patch: ModulePatch
    fused_shape: tuple[int, ...]
    start: int
    stop: int
    swap_halves: bool = False

    def _rows(self, t: Tensor) -> Tensor:
        return (swap_halves(t) if self.swap_halves else t)[self.start : self.stop]

    def delta(self, weight_shape: torch.Size, device: torch.device) -> Tensor | None:
        p = self.patch
        if p.kind == "lora" and "lora_mid" not in p.parts:  # only these rows: up[rows] @ down
            up = self._rows(p.parts["lora_up"].flatten(1)).to(device=device, dtype=torch.float32)
            down = p.parts["lora_down"].flatten(1).to(device=device, dtype=torch.float32)
            return ((up @ down) * p.scale).reshape(weight_shape)
        full = p.delta(torch.Size(self.fused_shape), device)
        return None if full is None else self._rows(full).reshape(weight_shape)

    def bias_delta(self, device: torch.device) -> Tensor | None:
        b = self.patch.bias_delta(device)
        return None if b is None else self._rows(b)


WeightPatch = ModulePatch | RowSlice


def _weight(module: torch.nn.Module) -> Tensor:
    weight = module.weight
    assert isinstance(weight, Tensor)  # the index lists only modules with a weight
    return weight


@dataclass(frozen=True)
class Target:
    """What a file's module name reaches: one module, or several whose weights the original layout
    stacks on dim 0 (Flux's `img_attn.qkv` is to_q, to_k and to_v), maybe with swapped halves."""

    parts: tuple[tuple[str, torch.nn.Module], ...]  # (dotted name, module)
    swap_halves: bool = False

    @property
    def name(self) -> str:
        return "+".join(name for name, _ in self.parts)

    @property
    def shape(self) -> tuple[int, ...]:
        shapes = [tuple(_weight(m).shape) for _, m in self.parts]
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    @property
    def has_bias(self) -> bool:
        return all(getattr(m, "bias", None) is not None for _, m in self.parts)

    def split(self, patch: ModulePatch) -> list[tuple[str, torch.nn.Module, WeightPatch]]:
        """(name, module, patch) for each module: a fused patch as a row slice per module."""
        if len(self.parts) == 1 and not self.swap_halves:
            return [(self.parts[0][0], self.parts[0][1], patch)]
        out: list[tuple[str, torch.nn.Module, WeightPatch]] = []
        start = 0
        for name, module in self.parts:
            stop = start + _weight(module).shape[0]
            out.append((name, module, RowSlice(patch, self.shape, start, stop, self.swap_halves)))
            start = stop
        return out


def _weighted(module: torch.nn.Module | None) -> bool:
    return isinstance(getattr(module, "weight", None), torch.nn.Parameter)


def _original_targets(components: Any, denoiser: torch.nn.Module) -> dict[str, Target]:
    """{flat original name: target} from the family's original layout of this denoiser."""
    try:
        family = families.family(str(getattr(components, "arch", "")))
    except ValueError:
        return {}
    modules = dict(denoiser.named_modules())
    out: dict[str, Target] = {}
    for rule in family.original_names(denoiser):
        if not rule.original.endswith(".weight"):
            continue
        parts = tuple((p.removesuffix(".weight"), modules.get(p.removesuffix(".weight"))) for p in rule.parts)
        found = [(n, m) for n, m in parts if m is not None and _weighted(m)]
        if len(found) != len(parts) or len({tuple(_weight(m).shape[1:]) for _, m in found}) != 1:
            continue  # not every part is here, or they cannot stack into one weight
        out[flat_name(UNET, rule.original.removesuffix(".weight"))] = Target(tuple(found), rule.swap_halves)
    return out


def module_index(components: Any) -> dict[tuple[str, str], Target]:
    """Every weighted module of the denoiser and text encoders under each name a file may use for it:
    {(component, flat name): target}. The denoiser is listed under its diffusers names and its family's
    original names (LDM for the UNets, BFL / Stability layouts for Flux / SD3)."""
    index: dict[tuple[str, str], Target] = {}
    for component in COMPONENTS:
        model = getattr(components, "denoiser", None) if component == UNET else None
        model = model if model is not None else getattr(components, component, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if _weighted(module):
                index[(component, flat_name(component, name))] = Target(((name, module),))
        if component == UNET:
            for flat, target in _original_targets(components, model).items():
                index.setdefault((UNET, flat), target)
    return index


def looks_like(parsed: ParsedNetwork) -> str | None:
    """The family a network's denoiser keys suggest ("Flux", "SD3", "SD1/SD2/SDXL"), None if unclear."""
    names = " ".join(flat for component, flat in parsed.patches if component == UNET)
    for pattern, label in (
        (r"double_blocks|single_blocks|single_transformer_blocks", "Flux"),
        (r"joint_blocks|context_block|x_block", "SD3"),
        (r"input_blocks|output_blocks|middle_block|down_blocks|up_blocks|mid_block", "SD1/SD2/SDXL"),
    ):
        if re.search(pattern, names):
            return label
    return None
