"""IP-Adapter files: what one is, its modules, and how it fits a UNet's cross-attention layers.

An IP-Adapter turns a reference image into a few extra tokens and lets every cross-attention layer of
the UNet attend to them beside the text ("decoupled cross-attention"):

    tokens = image_proj(clip_vision(image))                                   # once per job and unit
    attn2(x) = attention(q(x), k(text), v(text)) + weight * attention(q(x), k_ip(tokens), v_ip(tokens))

File layout (h94/IP-Adapter's, which every UI loads): `image_proj.*` and `ip_adapter.<n>.to_k_ip.weight` /
`ip_adapter.<n>.to_v_ip.weight`, where the i-th cross-attention layer of the UNet, in diffusers'
`attn_processors` order, is n = 2i + 1 (the numbering counts the self-attention layers too). The `.bin`
files keep the two parts as nested dicts (`{"image_proj": {...}, "ip_adapter": {...}}`), read through
`torch.load(weights_only=True)` like every pickle here. `image_proj` is:

- base (ip-adapter_sd15, ip-adapter_sdxl, ..._vit-h): `proj` + `norm`, 4 tokens from the CLIP vision
  encoder's projected image embedding;
- plus (ip-adapter-plus_*, plus-face): the Resampler (`latents`, `proj_in`, `layers.*`, `proj_out`,
  `norm_out`), 16 tokens from the encoder's penultimate hidden states;
- full-face: a feed-forward projection of the hidden states (257 tokens).

The projections are diffusers' own classes, built by diffusers' own converter; the attention is
diffusers' `IPAdapterAttnProcessor2_0`, given the adapter's key/value layers. FaceID adapters need
face embeddings from insightface and are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .layout import ControlNetFileError

PROJ = "image_proj."
LAYERS = "ip_adapter."
_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")
_TEXT_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def is_ip_adapter(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(PROJ) for k in sd) and any(k.startswith(LAYERS) for k in sd)


class IPAdapterWeights(nn.Module):
    """One IP-Adapter file: its image projection and one key/value pair of layers per cross-attention
    layer of the UNet (in diffusers' `attn_processors` order)."""

    def __init__(self, image_proj: nn.Module, to_k: nn.ModuleList, to_v: nn.ModuleList, tokens: int) -> None:
        super().__init__()
        self.image_proj, self.to_k, self.to_v = image_proj, to_k, to_v
        self.tokens = tokens

    @property
    def uses_hidden_states(self) -> bool:
        """Whether the projection reads the encoder's penultimate hidden states (plus, full-face) rather
        than its projected image embedding (base), as diffusers decides it."""
        from diffusers.models.embeddings import ImageProjection

        return not isinstance(self.image_proj, ImageProjection)

    @property
    def image_width(self) -> int:
        """The width of the encoder output the projection reads."""
        first = next(m for m in self.image_proj.modules() if isinstance(m, nn.Linear))
        return int(first.in_features)

    @property
    def text_width(self) -> int:
        return int(self.to_k[0].in_features)


def _parts(sd: Mapping[str, torch.Tensor], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    proj = {k[len(PROJ) :]: v for k, v in sd.items() if k.startswith(PROJ)}
    layers = {k[len(LAYERS) :]: v for k, v in sd.items() if k.startswith(LAYERS)}
    if not proj or not layers:
        raise ControlNetFileError(f"{name}: not an IP-Adapter (no image_proj.* and ip_adapter.* weights)")
    if "perceiver_resampler.proj_in.weight" in proj or ("norm.weight" in proj and "proj.0.weight" in proj):
        raise ControlNetFileError(
            f"{name}: a FaceID IP-Adapter; it needs face embeddings (insightface), which Sfumato does not "
            "compute: use a CLIP-vision IP-Adapter (ip-adapter_sd15, ip-adapter-plus_sd15, ...)"
        )
    return proj, layers


def _image_proj(proj: dict[str, torch.Tensor], name: str) -> nn.Module:
    """diffusers' projection module for the file's `image_proj.*` (converted by diffusers itself)."""
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    convert = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers
    try:
        with torch.random.fork_rng(devices=[]):  # it initialises the module before loading the weights
            module: nn.Module = convert(None, proj, low_cpu_mem_usage=False)  # self is unused this way
    except (RuntimeError, KeyError, IndexError, AttributeError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ControlNetFileError(f"{name}: its image projection does not load: {detail}") from e
    return module


def _tokens(module: nn.Module) -> int:
    from diffusers.models.embeddings import ImageProjection, IPAdapterFullImageProjection

    if isinstance(module, ImageProjection):
        return int(module.num_image_text_embeds)
    if isinstance(module, IPAdapterFullImageProjection):
        return 257  # 256 patches + the class token of a ViT-H/14 at 224
    return int(module.latents.shape[1])  # the Resampler's queries


def build_ip_adapter(sd: Mapping[str, torch.Tensor], name: str) -> IPAdapterWeights:
    """The adapter's modules (on the CPU, as stored) from its tensors; ControlNetFileError if the file
    is not a usable IP-Adapter."""
    proj, layers = _parts(sd, name)
    ids = sorted({int(m.group(1)) for k in layers if (m := _KEY.match(k))})
    if not ids or ids != list(range(1, 2 * len(ids), 2)):
        raise ControlNetFileError(f"{name}: its ip_adapter layers are not numbered 1, 3, 5, ...")
    k_list, v_list = nn.ModuleList(), nn.ModuleList()
    for n in ids:
        for kind, target in (("k", k_list), ("v", v_list)):
            weight = layers.get(f"{n}.to_{kind}_ip.weight")
            if weight is None or weight.ndim != 2:
                raise ControlNetFileError(f"{name}: no ip_adapter.{n}.to_{kind}_ip.weight")
            with torch.device("meta"):
                linear = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=False)
            linear.load_state_dict({"weight": weight}, assign=True)
            target.append(linear)
    image_proj = _image_proj(proj, name)
    return IPAdapterWeights(image_proj, k_list, v_list, _tokens(image_proj))


def cross_attention_layers(unet: Any) -> list[tuple[str, Any]]:
    """(name, Attention module) of every cross-attention layer of `unet`, in the adapter's order."""
    modules = dict(unet.named_modules())
    names = [n.removesuffix(".processor") for n in unet.attn_processors if n.endswith("attn2.processor")]
    return [(n, modules[n]) for n in names]


def check_fits(weights: IPAdapterWeights, layers: list[tuple[str, Any]], name: str) -> None:
    """ControlNetFileError unless the adapter has one fitting key/value pair per cross-attention layer."""
    widths = {int(a.to_k.weight.shape[1]) for _, a in layers}
    fits = len(weights.to_k) == len(layers) and all(
        tuple(k.weight.shape) == tuple(a.to_k.weight.shape)
        and tuple(v.weight.shape) == tuple(a.to_v.weight.shape)
        for k, v, (_, a) in zip(weights.to_k, weights.to_v, layers, strict=False)
    )
    if not fits:
        made_for = _TEXT_WIDTHS.get(weights.text_width, f"text width {weights.text_width}")
        model = " / ".join(_TEXT_WIDTHS.get(w, f"text width {w}") for w in sorted(widths))
        raise ControlNetFileError(
            f"{name} is an IP-Adapter for {made_for} ({len(weights.to_k)} cross-attention layers) and "
            f"cannot be used with this {model} checkpoint ({len(layers)} layers); pick an IP-Adapter made "
            "for the checkpoint's base model"
        )


def attention_processors(
    layers: list[tuple[str, Any]], adapters: list[tuple[IPAdapterWeights, float]]
) -> list[tuple[Any, Any]]:
    """(Attention module, IPAdapterAttnProcessor2_0) per cross-attention layer for several adapters at
    once (their tokens are passed in that order), each with its weight as scale. The processors share
    the adapters' layers; nothing is copied or initialised."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    out = []
    for i, (_, attn) in enumerate(layers):
        hidden, cross = attn.to_k.weight.shape
        with torch.device("meta"):  # its own layers are replaced by the adapters' right away
            proc = IPAdapterAttnProcessor2_0(
                int(hidden),
                int(cross),
                num_tokens=[w.tokens for w, _ in adapters],
                scale=[s for _, s in adapters],
            )
        proc.to_k_ip = nn.ModuleList([w.to_k[i] for w, _ in adapters])
        proc.to_v_ip = nn.ModuleList([w.to_v[i] for w, _ in adapters])
        out.append((attn, proc))
    return out


class WithImagePrompt:
    """The denoiser for one model call with the IP-Adapter processors in its cross-attention layers:
    they are set right before the call and the layers' own processors put back right after (in
    `finally`), so nothing outlives the call. The image tokens come as the call's `ip_adapter_tokens`
    (a list with one tensor per adapter, one row per model row: the loop slices them with the rows).
    `hold()`, when given, is entered around the call (it pins the adapters in the model cache)."""

    KEY = "ip_adapter_tokens"

    def __init__(
        self, model: Any, processors: list[tuple[Any, Any]], hold: Callable[[], Any] = nullcontext
    ) -> None:
        self.model, self.processors, self.hold = model, processors, hold

    def __getattr__(self, name: str) -> Any:  # config, dtype... as the wrapped model's
        if name == "model":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, *args: Any, encoder_hidden_states: Any, ip_adapter_tokens: Any, **kwargs: Any) -> Any:
        text_and_image = (encoder_hidden_states, list(ip_adapter_tokens))
        own = [(attn, attn.processor) for attn, _ in self.processors]
        with self.hold():
            try:
                for attn, proc in self.processors:
                    attn.set_processor(proc)
                return self.model(*args, encoder_hidden_states=text_and_image, **kwargs)
            finally:
                for attn, proc in own:
                    attn.set_processor(proc)
