"""The points where the engine hands control to extensions: the `EngineHooks` protocol and `NO_HOOKS`.

The engine knows nothing about plugins, folders or pluggy: it is given one object with these methods
(webui.plugins.host.PluginHost implements them; `NO_HOOKS` does nothing) and calls them, in this
order, once per `Engine.run`:

1. `request_received(request)` at the start, before validation: returns the request to run (the same
   one, or a modified copy made with `dataclasses.replace`). May raise `RequestError` to refuse it.
2. `step_hooks(request)` once, with the request from 1: the hooks the sampling loop calls at
   BEFORE_STEP, AFTER_CFG and AFTER_STEP of every step with a mutable `StepState`.
3. `model_hooks(request, components)` once the request's model is held (its LoRAs applied): the
   hooks the loop calls right before every model call (BEFORE_MODEL) with a mutable `ModelCallState`
   (they add ControlNet residuals and the like to `state.inputs.extra`, for that call only).
   `components` are the job's loaded parts: implementations may read them, never change them.
4. `after_decode(request, images, sub_pass, info)` once per batch, after the VAE decode: returns the
   images to save (same number, same order). `sub_pass(img2img_request)` runs an img2img/inpaint pass
   on the job's loaded model and returns its pictures (a detailer's second pass); None where there is
   none. `info` has one ImageInfo per image (its resolved prompts, seed and subseed, index in the job).
   Each time the sub-pass runs a sub-request, `sub_pass_hooks(sub_request, components)` gives the
   model hooks for that sub-request alone: the extensions named in its `extension_args` check it (a
   bad value raises RequestError out of the sub-pass) and act on its model calls (a detailer's
   ControlNet unit). Extensions not named there do not act on a sub-pass.
5. `extra_infotext(request)` for every image: keys added to the infotext parameters (the engine's own
   keys win on a clash).
6. `after_save(request, image)` for every image, once it is on disk (or final, when not saved).
7. `take_problems()` at the end: one line per extension that failed during this run, naming it; the
   engine adds them to `GenerationResult.warnings`. The run itself still finishes.

Besides, `image_upscalers()` names the picture upscalers extensions provide (for hires fix and Extras):
name -> `upscale(image, width, height)` returning the picture at exactly that size; and `samplers()`
the samplers they register: name -> an object with `name`, `aliases` and `make_scheduler(config)`
(webui.plugins.descriptors.SamplerSpec), which the engine turns into its SamplerCatalog.

Every method is called on the thread that runs the job, so an implementation may keep per-job state
per thread. Implementations must never raise from 2-7: failures are theirs to record and report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

    from webui.core.models.components import Components
    from webui.core.models.offload import Offloader
    from webui.core.sampling.loop import Hook, ModelHook
    from webui.core.types import GeneratedImage, GenerationRequest, Img2ImgRequest

R = TypeVar("R", bound="GenerationRequest")
Upscale = Callable[[Any, int, int], Any]  # (PIL image, width, height) -> PIL image of that size
SubPass = Callable[["Img2ImgRequest"], "list[Image.Image]"]  # an img2img pass on the job's loaded model


@dataclass(frozen=True)
class ImageInfo:
    """What one decoded image was made from: the prompts as sampled (styles applied), its own seed and
    subseed (resolved, with the batch offset), and its index among the job's images."""

    prompt: str
    negative_prompt: str
    seed: int
    subseed: int
    index: int


@runtime_checkable
class EngineHooks(Protocol):
    """What the engine calls around one run (see the module docstring for the order)."""

    def request_received(self, request: R) -> R: ...

    def step_hooks(self, request: GenerationRequest) -> Sequence[Hook]: ...

    def model_hooks(self, request: GenerationRequest, components: Components) -> Sequence[ModelHook]: ...

    def after_decode(
        self,
        request: GenerationRequest,
        images: list[Image.Image],
        sub_pass: SubPass | None = None,
        info: Sequence[ImageInfo] = (),
    ) -> list[Image.Image]: ...

    def sub_pass_hooks(self, request: Img2ImgRequest, components: Components) -> Sequence[ModelHook]: ...

    def extra_infotext(self, request: GenerationRequest) -> dict[str, object]: ...

    def after_save(self, request: GenerationRequest, image: GeneratedImage) -> None: ...

    def take_problems(self) -> list[str]: ...

    def image_upscalers(self) -> Mapping[str, Upscale]: ...

    def samplers(self) -> Mapping[str, Any]: ...

    def offload_on(self, device: str, offloader: Offloader) -> None:
        """Extension models asked for on `device` wait in RAM and `offloader` (that device's worker's,
        --medvram/--lowvram) moves them there as they run."""
        ...


class NoHooks:
    """EngineHooks that change nothing: the engine's default when no extensions are loaded."""

    def request_received(self, request: R) -> R:
        return request

    def step_hooks(self, request: GenerationRequest) -> Sequence[Hook]:
        return ()

    def model_hooks(self, request: GenerationRequest, components: Components) -> Sequence[ModelHook]:
        return ()

    def after_decode(
        self,
        request: GenerationRequest,
        images: list[Image.Image],
        sub_pass: SubPass | None = None,
        info: Sequence[ImageInfo] = (),
    ) -> list[Image.Image]:
        return images

    def sub_pass_hooks(self, request: Img2ImgRequest, components: Components) -> Sequence[ModelHook]:
        return ()

    def extra_infotext(self, request: GenerationRequest) -> dict[str, object]:
        return {}

    def after_save(self, request: GenerationRequest, image: GeneratedImage) -> None:
        return None

    def take_problems(self) -> list[str]:
        return []

    def image_upscalers(self) -> Mapping[str, Upscale]:
        return {}

    def samplers(self) -> Mapping[str, Any]:
        return {}

    def offload_on(self, device: str, offloader: Offloader) -> None:
        return None


NO_HOOKS: EngineHooks = NoHooks()
