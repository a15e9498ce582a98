"""The one module an extension imports: hooks, typed state, requests and descriptors (plugin API 2.4).

    from webui.plugins.api import hookimpl, UiSection, Field

    @hookimpl
    def register(registry):
        registry.add(UiSection("txt2img", "My effect", fields=(Field("strength", "slider", 0.5,
                                                                      minimum=0, maximum=1),)))

    @hookimpl
    def after_decode(images, args):
        return [my_effect(im, args["strength"]) for im in images]

API 2 adds, for extensions such as ControlNet and detailers:

    @hookimpl
    def before_model(state, args, components):      # every model call: state is a ModelCallState
        if args["weight"] and state.step < state.total * args["end"]:
            state.inputs.extra["down_block_additional_residuals"] = ...  # this call only

    Field("image", "image", None)                     # an image drop in the UI, base64 in the API
    def after_decode(images, runner): ...            # runner(Img2ImgRequest(...)) -> pictures
    def after_decode(images, image_info): ...        # per image: ImageInfo(prompt, seed, subseed, ...)
    def from_alwayson(script_args): ...              # A1111 alwayson_scripts args -> field values
    def infotext_fields(params): ...                 # an image's infotext -> accordion values (PNG Info)
    UiSection(..., preview=lambda values: image)     # a Preview button in the accordion
    labelled_grid(cells, col_labels, row_labels, margin)  # a captioned grid (X/Y/Z plot, prompt matrix)

API 2.1 adds field groups (tabs inside an accordion) and the stored settings in `register`:

    Field("image", "image", None, group="ControlNet Unit 0")   # fields of a group share a tab
    def register(registry, settings): ...            # settings as stored at start (unchecked)

API 2.2 lets a sub-pass carry other extensions' work, and says what an img2img pass works on:

    runner(Img2ImgRequest(..., extension_args={"controlnet": {"_units": [unit]}}))  # the named
        # extensions check the sub-request and run their before_model on its model calls only
    img2img_work_image(request)                      # the picture the pass denoises ("only masked":
                                                     # the masked region's crop at the pass's size;
                                                     # RGBA with the pass's mask when it has one)

API 2.3 says what an SD3 / Flux transformer gets, for a model run beside it (their ControlNets):

    state.denoiser_kwargs()                          # hidden_states, timestep, encoder_hidden_states,
                                                     # pooled_projections (Flux: packed, ids, guidance)
    state.denoiser_latents(latents)                  # (B, 16, h, w) latents as it sees them
    state.inputs.extra["controlnet_block_samples"] = ...  # Flux (SD3: block_controlnet_hidden_states)

API 2.4 lets a script use the studio's picture upscalers (Extras' list), and a field pick one:

    runner.upscalers                                 # a script's runner: {name: upscale(image, w, h)},
                                                     # Lanczos, Nearest, then the extensions' upscalers
    Field("upscaler", "upscaler", "None")            # a dropdown of "None" and those names; checked
                                                     # against them in extension_args

extensions/controlnet is the worked example; extensions/detailer's ControlNet unit uses 2.2;
extensions/a1111_scripts/sd_upscale.py uses 2.4.

Everything else in `webui` is internal and may change between versions; what is named here follows
API_VERSION (same major: compatible; extensions for API 1.0 load unchanged).
"""

from __future__ import annotations

from webui.core.config import AppConfig
from webui.core.extension_points import ImageInfo, SubPass
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict
from webui.core.outputs.grid import image_grid
from webui.core.outputs.grid_labels import labelled_grid, side_by_side
from webui.core.outputs.infotext import format_infotext, parse_infotext
from webui.core.outputs.saving import image_folder, read_infotext, save_image
from webui.core.sampling.loop import Hook, HookPoint, ModelCallState, StepState
from webui.core.sampling.model_inputs import ModelInputs
from webui.core.sampling.noise import resolve_seed
from webui.core.sampling.samplers import UnknownSampler
from webui.core.sampling.samplers import make_scheduler as make_builtin_scheduler
from webui.core.sampling.samplers import resolve as resolve_sampler
from webui.core.tasks.img2img_batch import work_image as img2img_work_image
from webui.core.types import (
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    RequestError,
    Txt2ImgRequest,
)
from webui.plugins.descriptors import (
    ExtensionContext,
    Field,
    Registry,
    RouteSpec,
    Runner,
    SamplerSpec,
    ScriptSpec,
    SettingsSection,
    UiSection,
    UpscalerSpec,
)
from webui.plugins.ext_models import ExtensionModels
from webui.plugins.hookspecs import hookimpl
from webui.plugins.host import replace_args
from webui.plugins.job_model import JobModel
from webui.plugins.manifest import API_VERSION

__all__ = [
    "API_VERSION",
    "AppConfig",
    "CheckpointError",
    "ExtensionContext",
    "ExtensionModels",
    "Field",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "Hook",
    "HookPoint",
    "ImageInfo",
    "Img2ImgRequest",
    "JobModel",
    "ModelCallState",
    "ModelInputs",
    "Registry",
    "RequestError",
    "RouteSpec",
    "Runner",
    "SamplerSpec",
    "ScriptSpec",
    "SettingsSection",
    "StepState",
    "SubPass",
    "Txt2ImgRequest",
    "UiSection",
    "UnknownSampler",
    "UpscalerSpec",
    "format_infotext",
    "hookimpl",
    "image_folder",
    "image_grid",
    "img2img_work_image",
    "labelled_grid",
    "load_state_dict",
    "make_builtin_scheduler",
    "parse_infotext",
    "read_infotext",
    "replace_args",
    "resolve_sampler",
    "resolve_seed",
    "save_image",
    "side_by_side",
]
