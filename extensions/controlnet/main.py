"""ControlNet as an extension on plugin API 2: units from the UI or sd-webui-controlnet's API, their
residuals added before every model call of the job (IP-Adapter units: their image prompt in the
cross-attention of that call), their infotext, and that extension's routes.

- models.py     files in models/ControlNet, A1111 short hashes, loading (ControlNetModel, T2IAdapter)
- layout.py     what a ControlNet file is (layout, base model, config) and the LDM -> diffusers renaming
- flow_layout.py SD3 / Flux ControlNets (diffusers' SD3ControlNetModel, FluxControlNetModel): which kinds
                run, their config from the tensors, the checkpoint they fit
- flow_units.py the same units in an SD3 / Flux job: control image VAE-encoded, the ControlNet's block
                outputs added to each transformer call
- control_lora.py Control-LoRA files: low-rank differences made into a dense ControlNet per job from
                the job's UNet
- adapter.py    the same for T2I-Adapters (TencentARC's original layout and diffusers')
- images.py     base64 images, resize modes, pixel-perfect resolution, the control tensor
- preprocess.py the weight-free preprocessors (canny, lineart, scribble, tile, shuffle, invert, inpaint)
- lineart.py    lineart_realistic / lineart_coarse (the informative-drawings network, sk_model*.pth)
- lineart_anime.py lineart_anime (the pix2pix U-Net, netG.pth)
- openpose_net.py, openpose_keypoints.py, openpose.py  openpose: the CMU body network
                (body_pose_model.pth), people from its maps, the skeleton drawing and pose JSON
- openpose_cpm.py the pose machine CMU's hand and face networks share
- openpose_hand.py openpose_hand's hands (the CMU hand network, hand_pose_model.pth)
- openpose_face.py openpose_face's faces (the CMU face network, facenet.pth); openpose_full: both
- annotator_files.py reading and checking any annotator's weights (safe loader, strict keys); Nets:
                the networks kept in the extension's model cache, run on the job's device
- units.py      sd-webui-controlnet's API unit dicts -> frozen ControlUnit (errors name unit and field)
- fields.py     the accordion (one unit) and its values as a unit dict
- job.py        one job's units made ready at each pass's size, run before each model call
- residuals.py  the BEFORE_MODEL hook that adds each active unit's residuals (ControlNet) or features
                (T2I-Adapter) to the model call
- ipadapter.py  IP-Adapter files (h94's layout): image projection, key/value layers, the per-call patch
- clip_vision.py the CLIP vision encoders of the ip-adapter_* modules (models/clip_vision)
- image_prompt.py an IP-Adapter unit in a job: image tokens once, cross-attention patched per call
- infotext.py   `ControlNet 0: "Module: canny, Model: ..."` written and read back
- routes.py     sd-webui-controlnet's /controlnet/* routes

Where the units come from, in a request's `extension_args.controlnet`:
`_units` (what `from_alwayson` read from `alwayson_scripts.controlnet.args`, or a native client's list
of unit objects), else the accordion's enabled unit tabs (`enabled`, `image`, ... for unit 0,
`unit1_enabled`, `unit1_image`, ... for unit 1; the `unit_count` setting says how many tabs the UI has).
"""

from __future__ import annotations

from typing import Any

from webui.plugins.api import (
    Img2ImgRequest,
    RequestError,
    RouteSpec,
    SettingsSection,
    hookimpl,
    img2img_work_image,
    replace_args,
)

from . import routes
from .annotator_files import Nets
from .fields import count_setting, field_name, infotext_values, section, ui_units, unit_count
from .infotext import infotext_params, units_from_params
from .job import JobState, check_modules
from .job import before_model as run_units
from .models import find_model, list_models
from .units import MAX_UNITS, UnitError, from_stored, parse_units, stored

NAME = "controlnet"


@hookimpl
def register(registry: Any, context: Any, settings: Any) -> None:
    count = unit_count(settings)
    models_dir = context.models_dir
    nets = Nets(context.models)  # outside a job: cached, on the device of the extension's models
    registry.add(section(list_models(models_dir), models_dir, count, nets))
    registry.add(SettingsSection("ControlNet", fields=(count_setting(),)))

    def model_list(update: bool = True) -> dict[str, Any]:
        return routes.model_list(models_dir)

    def module_list(alias_names: bool = False) -> dict[str, Any]:
        return routes.module_list(alias_names)

    def detect(body: dict[str, Any]) -> dict[str, Any]:
        return routes.detect(body, models_dir, nets)

    for path, endpoint, methods in (
        ("/version", routes.version, ("GET",)),
        ("/model_list", model_list, ("GET",)),
        ("/module_list", module_list, ("GET",)),
        ("/detect", detect, ("POST",)),
    ):
        registry.add(RouteSpec(path, endpoint, methods=methods, summary=f"sd-webui-controlnet's {path}"))
        registry.add(RouteSpec(f"/controlnet{path}", endpoint, methods=methods, root=True))


@hookimpl
def from_alwayson(script_args: Any, context: Any) -> dict[str, Any]:
    """sd-webui-controlnet's `{"args": [unit, ...]}`: the enabled units, checked (errors name
    `args[i].<key>`), as `_units`."""
    try:
        units = parse_units(script_args, list_models(context.models_dir))
        check_modules(units, context.models_dir)
    except UnitError as e:
        raise RequestError(f"args[{e.unit}].{e.name}", e.message) from e
    except RequestError as e:
        raise RequestError("args", e.message) from e
    return {"_units": [stored(u) for u in units]}


def _units(args: dict[str, Any], context: Any) -> list[Any]:
    files = list_models(context.models_dir)
    stored_units = args.get("_units") is not None
    try:
        units = from_stored(args["_units"] if stored_units else ui_units(args), files)
        check_modules(units, context.models_dir)
    except UnitError as e:
        where = f"_units[{e.unit}].{e.name}" if stored_units else field_name(e.unit, e.name)
        raise RequestError(f"extension_args.{NAME}.{where}", e.message) from e
    return units


@hookimpl
def request_received(request: Any, args: dict[str, Any], context: Any) -> Any:
    """The units checked now (a bad one refuses the job: 422 when submitted), and the job's state."""
    units = _units(args, context)
    if not units:
        return replace_args(request, NAME, _job=None) if args.get("_job") is not None else None
    init = init_mask = None
    if isinstance(request, Img2ImgRequest) and request.init_images:
        # "only masked" (a detailer's sub-pass, an inpaint job) works on the masked region's crop: a
        # unit without its own image follows it there, as sd-webui-controlnet crops its image; an
        # inpaint unit without its own image takes the job's mask (there, or the whole picture's)
        if request.inpaint_full_res and request.mask is not None:
            work = img2img_work_image(request)
            init, init_mask = work.convert("RGB"), work.getchannel("A")
        else:
            init = request.init_images[0]
            if request.mask is not None and request.mask.size == init.size:
                init_mask = request.mask.convert("L")
    files = tuple(list_models(context.models_dir))
    return replace_args(request, NAME, _job=JobState(tuple(units), files, init, init_mask))


@hookimpl
def before_model(state: Any, args: dict[str, Any], context: Any, components: Any) -> None:
    job = args.get("_job")
    if isinstance(job, JobState):
        run_units(job, state, components, context)


@hookimpl
def extra_infotext(args: dict[str, Any]) -> dict[str, str] | None:
    job = args.get("_job")
    return infotext_params(job.units) if isinstance(job, JobState) else None


@hookimpl
def infotext_fields(params: dict[str, str], context: Any) -> dict[str, Any]:
    """The `ControlNet N` units of an image's infotext, each for the accordion's unit N tab (its model as
    listed now when the file is still there; the control image is not recorded). Tabs without a unit
    are switched off, as A1111 pastes them (the host keeps the values of the tabs the UI has)."""
    try:
        units = units_from_params(params)
    except ValueError:
        units = {}
    files = list_models(context.models_dir)
    for values in units.values():
        try:
            values["model"] = find_model(files, str(values.get("model", ""))).title
        except KeyError:
            values.pop("model", None)
    return infotext_values(units, MAX_UNITS)
