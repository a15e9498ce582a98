"""What a model family is, as plain frozen data: the one place the rest of Sfumato asks about a model.

A `Family` describes one architecture name (the shipped config folder a checkpoint is built from:
"sd1", "sd1-inpaint", "sdxl-refiner"...). The families of one kind live in one module (`sd1.py`,
`sd2.py`, `sdxl.py`); `webui.core.families` lists them and finds the one for an arch or a model.

Each says:
- `group`/`when_inpaint`/`when_v`: how a detected checkpoint (a group such as "sd1", an inpainting
  flag, a prediction type) picks it; `label` is the name people see;
- `components`/`pipeline_class`: the modules it has and the diffusers pipeline that matches them;
- `latent`: the latent format (channels, downscale, VAE factors, cheap-preview factors);
- `text`: its text conditioning (encoders, pooled vector, token limit, what clip skip means);
- `denoiser`/`size_conditioning`: how the denoiser is called (the model inputs it builds);
- `guidance`: how the guided prediction is formed (CFG, or distilled guidance with
  `distilled_guidance`: the scale is a model input and there is no uncond pass);
- `original_names`: the denoiser's tensors under its original (research-code) names, which kohya-style
  LoRA files use (LDM names for the UNets, BFL's and Stability's fused layouts for Flux and SD3);
- `prediction_type`, `sampling` (diffusion samplers, or flow-matching ones), `defaults`, `tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from webui.core.models.tokenizer import MAX_LENGTH

if TYPE_CHECKING:
    from webui.core.models.fused_layout import Fused
    from webui.core.sampling.guidance import Guidance
    from webui.core.sampling.model_inputs import DenoiserCall

Task = Literal["txt2img", "img2img", "inpaint", "hires"]
ALL_TASKS: tuple[Task, ...] = ("txt2img", "img2img", "inpaint", "hires")
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class LatentFormat:
    """How pictures look in latent space. The loaded VAE's config holds the factors it was trained with;
    these are the family's (tests check the shipped configs agree)."""

    channels: int = 4
    downscale: int = 8  # pixels per latent cell, per side
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    preview_rgb: tuple[RGB, ...] = ()  # one row per channel: a least-squares map to RGB in -1..1
    preview_bias: RGB | None = None
    size_multiple: int = 8  # pixel sizes must be multiples of this (a patchifying denoiser: 8 x patch)
    taesd: str = ""  # the tiny autoencoder of this latent space, as people name it (models/VAE-approx/)

    def shape(self, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's latents."""
        return self.channels, height // self.downscale, width // self.downscale

    @property
    def inpaint_in_channels(self) -> int:
        """Input channels of an inpainting denoiser: latents, a mask channel, masked-image latents."""
        return 2 * self.channels + 1

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """(C, h, w) latents of one image to an approximate (3, h, w) picture in -1..1."""
        m = torch.tensor(self.preview_rgb, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->rhw", latents.float().cpu(), m)
        if self.preview_bias is not None:
            rgb = rgb + torch.tensor(self.preview_bias).view(3, 1, 1)
        return rgb


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder: its component names, tokenizer pad token and single-file layout."""

    component: str  # "text_encoder" | "text_encoder_2"
    tokenizer: str  # "tokenizer" | "tokenizer_2"
    pad_token: str  # CLIP ViT-L pads with <|endoftext|>, OpenCLIP with "!"
    layout: str  # single-file layout: "clip" | "openclip" | "openclip-penultimate"
    key_prefix: str  # where its weights live in a single (LDM-layout) file
    pooled: bool = False  # its projected pooled output conditions the denoiser


@dataclass(frozen=True)
class TextConditioning:
    """How prompts become the denoiser's text inputs.

    `hidden_layer` is what clip skip 1 means: "last" takes the encoder's final hidden state (after
    its final norm) and clip skip N the state N-1 layers earlier through the final norm (A1111, SD1/SD2;
    SD2's penultimate layer is built in: its loaded encoder has one layer fewer than the file);
    "penultimate" takes every encoder's penultimate state without the final norm and clip skip N moves
    N-1 layers further back (SDXL). Encoders' outputs are concatenated on the feature axis, in order.
    """

    encoders: tuple[TextEncoder, ...]
    hidden_layer: Literal["last", "penultimate"] = "last"
    token_limit: int = MAX_LENGTH  # tokens per chunk, start and end tokens included
    t5_length: int = 0  # flow families: T5 tokens appended to the sequence (0: no T5)
    clip_in_sequence: bool = True  # the CLIP hidden states join the sequence (SD3), or only pooled (Flux)

    @property
    def pooled(self) -> bool:
        return any(e.pooled for e in self.encoders)


class SizeConditioning(Protocol):
    """Extra per-row conditioning from the picture's size (SDXL's time ids), or None."""

    def __call__(self, width: int, height: int, batch: int, guided: bool) -> torch.Tensor | None: ...


def no_size_conditioning(width: int, height: int, batch: int, guided: bool) -> None:
    return None


class OriginalNames(Protocol):
    """A loaded denoiser's tensors under their original names, each with the diffusers tensors it stands
    for (several, stacked on dim 0, where the original fuses them: Flux's `img_attn.qkv`)."""

    def __call__(self, denoiser: Any, /) -> Sequence[Fused]: ...


def no_original_names(denoiser: Any) -> Sequence[Fused]:
    return ()


class ShapesConfig(Protocol):
    """A denoiser's diffusers config from its original-layout tensor shapes under `prefix`."""

    def __call__(self, shapes: Mapping[str, tuple[int, ...]], prefix: str, /) -> dict[str, Any]: ...


class FromOriginal(Protocol):
    """A denoiser's state dict from its original (research-code) layout to diffusers'."""

    def __call__(self, checkpoint: Mapping[str, torch.Tensor], /) -> dict[str, torch.Tensor]: ...


ClipPart = Literal["clip_l", "clip_g"]


@dataclass(frozen=True)
class FlowFiles:
    """How a flow-matching family is found in and built from the single files people keep
    (webui.core.models.flow_loader asks this; nothing there knows a family by name).

    The group's denoiser is recognised by `mark` (a key of its original layout, after the file's
    prefix); among a group's archs, the one whose `arch_mark` is present wins, else the one without.
    """

    label: str  # "Flux", "SD3": in messages
    mark: str
    arch_mark: str | None
    transformer_class: str  # the diffusers class
    config: ShapesConfig
    from_original: FromOriginal
    fp8_blocks: tuple[str, ...]  # where fp8 Linear weights stay fp8 (webui.core.models.fp8)
    clip_parts: tuple[ClipPart, ...]  # the CLIP encoders it takes beside T5 (text_encoder, _2)
    clip_l_projected: bool  # CLIP-L loads with a text projection (identity when the file has none)
    tokens_per_cell: int  # latent cells per input token (Flux packs 2x2: in_channels = 4 x channels)
    scheduler: Mapping[str, Any]  # the official scheduler config (shared/reference/model-families)

    def projected(self, part: ClipPart) -> bool:
        return part == "clip_g" or self.clip_l_projected


@dataclass(frozen=True)
class Defaults:
    sampler: str = "DPM++ 2M"
    schedule: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    distilled_cfg_scale: float | None = None  # families with distilled guidance
    width: int = 512
    height: int = 512


@dataclass(frozen=True)
class Family:
    arch: str  # the shipped config folder (webui/assets/configs/<arch>)
    group: str  # what detection calls it: several archs share one ("sd1" and "sd1-inpaint")
    group_label: str  # "SD1", "SDXL refiner"
    pipeline_class: str
    components: tuple[str, ...]
    latent: LatentFormat
    text: TextConditioning
    denoiser: DenoiserCall
    guidance: Guidance
    size_conditioning: SizeConditioning = no_size_conditioning
    original_names: OriginalNames = no_original_names
    time_id_count: int = 0  # values per row of `size_conditioning` (sizes the UNet's added embedding)
    when_inpaint: bool | None = None  # picked for inpainting (True) / other (False) checkpoints
    when_v: bool | None = None  # picked for v-prediction (True) / epsilon (False) checkpoints
    edit: bool = False  # an instruct-pix2pix style denoiser: latents + the source image's latents
    inpaint_pipeline_class: str | None = None  # for a 9-channel checkpoint of this arch
    prediction_type: str = "epsilon"  # the shipped config's; a checkpoint's yaml may say otherwise
    unet_head_dim: int | None = None  # attention head count where it is fixed (SD1: 8), else 64-wide
    defaults: Defaults = field(default_factory=Defaults)
    tasks: tuple[Task, ...] = ALL_TASKS
    sampling: Literal["diffusion", "flow"] = "diffusion"  # flow: webui.core.sampling.flow_samplers
    distilled_guidance: bool = False  # the guidance scale is a model input ("Distilled CFG Scale")
    files: FlowFiles | None = None  # flow families: how single files are read (models.flow_loader)

    def label(self, inpaint: bool = False, prediction_type: str = "epsilon") -> str:
        """For people: "SD1", "SD1 (inpaint)", "SD2 (v)", "SDXL refiner"."""
        extra = [s for s, on in (("inpaint", inpaint), ("v", prediction_type == "v_prediction")) if on]
        return self.group_label + (f" ({', '.join(extra)})" if extra else "")

    def pipeline_class_for(self, inpaint: bool) -> str:
        """The diffusers pipeline of a checkpoint of this arch (9-channel UNets: the inpaint one)."""
        return (self.inpaint_pipeline_class or self.pipeline_class) if inpaint else self.pipeline_class

    @property
    def flow_matching(self) -> bool:
        """Sampled with the flow-matching samplers (webui.core.sampling.flow_samplers)."""
        return self.sampling == "flow"

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    def takes_image_cond(self, model: object) -> bool:
        """Whether this denoiser takes a mask and masked-image latents as extra input channels."""
        config = getattr(model, "config", None)
        return getattr(config, "in_channels", self.latent.channels) == self.latent.inpaint_in_channels

    @property
    def in_channels(self) -> int:
        """The denoiser's input channels: the latents, plus a mask and masked-image latents for
        inpainting or the source image's latents for an edit model."""
        if self.when_inpaint:
            return self.latent.inpaint_in_channels
        return 2 * self.latent.channels if self.edit else self.latent.channels

    def takes_edit_image(self, model: object) -> bool:
        """Whether this denoiser takes the source image's latents as extra input channels (edit models)."""
        config = getattr(model, "config", None)
        return self.edit and getattr(config, "in_channels", self.latent.channels) == 2 * self.latent.channels

    def pad_token(self, tokenizer: str) -> str:
        for e in self.text.encoders:
            if e.tokenizer == tokenizer:
                return e.pad_token
        names = ", ".join(e.tokenizer for e in self.text.encoders)
        raise ValueError(f"architecture {self.arch!r} has no {tokenizer!r}; it has: {names}")
