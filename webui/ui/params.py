"""Generation parameters found in an image -> the studio's fields (by request field name).

Readers for the three formats people drop on PNG Info:

- A1111/Sfumato infotext (`parameters` chunk): every key maps to its field; keys that A1111 leaves out
  when they hold their default (Clip skip, variation seed, hires) reset those fields, as A1111 does, so
  pasting reproduces the image.
- InvokeAI `invokeai_metadata` (JSON): prompts, seed, steps, CFG, size, scheduler, model.
- ComfyUI `prompt` (the API graph, JSON): the first KSampler's seed/steps/cfg/sampler/scheduler, the
  text of the CLIPTextEncode nodes wired to it, the latent size, the checkpoint name.

Each returns `{field name: value}` with only the fields it can name. Pure functions: no UI here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from webui.core import soft_inpaint_fields
from webui.core.outputs.infotext import parse_infotext, parse_size

FindModel = Callable[[str], str | None]  # a name or hash -> checkpoint title, or None

_INT_KEYS = {
    "Steps": "steps",
    "Seed": "seed",
    "Variation seed": "subseed",
    "Clip skip": "clip_skip",
    "Hires steps": "hr_second_pass_steps",
    "Mask blur": "mask_blur",
    "Masked area padding": "inpaint_full_res_padding",
}
_FLOAT_KEYS = {
    "CFG scale": "cfg_scale",
    "Distilled CFG Scale": "distilled_cfg_scale",  # Forge's, Flux dev
    "Image CFG scale": "image_cfg_scale",  # instruct-pix2pix models
    "Variation seed strength": "subseed_strength",
    "Denoising strength": "denoising_strength",
    "Hires upscale": "hr_scale",
    "Refiner switch at": "refiner_switch_at",
    "Noise multiplier": "initial_noise_multiplier",
}
_TEXT_KEYS = {
    "Hires upscaler": "hr_upscaler",
    "Hires sampler": "hr_sampler_name",
    "Hires schedule type": "hr_scheduler",
    "Hires prompt": "hr_prompt",
    "Hires negative prompt": "hr_negative_prompt",
    "VAE": "vae",
}
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
# Keys A1111 omits at their default value: absent means this.
_ABSENT_DEFAULTS: Mapping[str, Any] = {
    "clip_skip": 1,
    "subseed_strength": 0.0,
    "seed_resize_from_w": -1,
    "seed_resize_from_h": -1,
    "enable_hr": False,
    "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Use same scheduler",
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "hr_checkpoint_name": "Use same checkpoint",
    "refiner_checkpoint": "None",
    "modules": [],
    "restore_faces": False,
}


def _number(value: str, kind: type) -> Any:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if kind is int else number


def split_sampler(sampler: str, schedule: str | None) -> tuple[str, str]:
    """(sampler, schedule type) for an infotext's Sampler (old ones say "DPM++ 2M Karras")."""
    from webui.core.sampling.samplers import UnknownSampler, resolve

    try:
        info, label = resolve(sampler, schedule)
    except UnknownSampler:
        return sampler, schedule or "Automatic"
    return info.name, schedule or (label if sampler != info.name else "Automatic")


def from_infotext(text: str, find_model: FindModel | None = None) -> dict[str, Any]:
    """Fields from A1111/Sfumato infotext."""
    params = parse_infotext(text)
    out: dict[str, Any] = {
        "prompt": params.get("Prompt", ""),
        "negative_prompt": params.get("Negative prompt", ""),
    }
    if len(params) <= 2:
        return out  # a bare prompt
    out.update(_ABSENT_DEFAULTS)
    for key, name in _INT_KEYS.items():
        if key in params and (v := _number(params[key], int)) is not None:
            out[name] = v
    for key, name in _FLOAT_KEYS.items():
        if key in params and (v := _number(params[key], float)) is not None:
            out[name] = v
    for key, name in _TEXT_KEYS.items():
        if key in params:
            out[name] = params[key]
    modules = [params[f"Module {i}"] for i in range(1, 9) if f"Module {i}" in params]
    if modules:
        out["modules"] = modules  # names without extension, as Forge writes them (sendto matches files)
    if "Sampler" in params:
        out["sampler_name"], out["scheduler"] = split_sampler(params["Sampler"], params.get("Schedule type"))
    for key, (wname, hname) in {
        "Size": ("width", "height"),
        "Seed resize from": ("seed_resize_from_w", "seed_resize_from_h"),
        "Hires resize": ("hr_resize_x", "hr_resize_y"),
    }.items():
        if key in params:
            with contextlib.suppress(ValueError):
                out[wname], out[hname] = parse_size(params[key])
    if "Face restoration" in params:
        out["restore_faces"], out["face_restoration_model"] = True, params["Face restoration"]
    if "Hires upscale" in params or "Hires resize" in params:
        out["enable_hr"] = True
    if "Masked content" in params and params["Masked content"] in MASKED_CONTENT:
        out["inpainting_fill"] = MASKED_CONTENT.index(params["Masked content"])
    if "Inpaint area" in params:
        out["inpaint_full_res"] = params["Inpaint area"].strip().lower() == "only masked"
    out.update(soft_inpaint_fields.from_infotext(params))
    if find_model is not None:
        for key, name in (("Hires checkpoint", "hr_checkpoint_name"), ("Refiner", "refiner_checkpoint")):
            title = find_model(params[key]) if key in params else None
            if title:  # A1111 writes "name [hash]"; the pickers list titles
                out[name] = title
        for key in ("Model hash", "Model"):
            title = find_model(params[key]) if key in params else None
            if title:
                out["checkpoint"] = title
                break
    return out


_INVOKE_SCHEDULERS = {
    "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_2s": "DPM++ 2S a", "ddim": "DDIM", "lms": "LMS", "heun": "Heun",
    "kdpm_2": "DPM2", "kdpm_2_a": "DPM2 a", "unipc": "UniPC", "pndm": "PLMS", "lcm": "LCM", "deis": "DEIS",
}  # fmt: skip
_COMFY_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_2s_ancestral": "DPM++ 2S a", "ddim": "DDIM", "lms": "LMS",
    "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "uni_pc": "UniPC", "lcm": "LCM",
    "deis": "DEIS",
}  # fmt: skip
_COMFY_SCHEDULES = {
    "normal": "Automatic", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Uniform", "ddim_uniform": "DDIM", "beta": "Beta",
}  # fmt: skip


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def _put_number(out: dict[str, Any], name: str, value: Any, kind: type) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[name] = kind(value)


def from_invokeai(text: str, find_model: FindModel | None = None) -> dict[str, Any]:
    data = _json(text)
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key, name in (("positive_prompt", "prompt"), ("negative_prompt", "negative_prompt")):
        if isinstance(data.get(key), str):
            out[name] = data[key]
    for key, name, kind in (
        ("seed", "seed", int), ("steps", "steps", int), ("cfg_scale", "cfg_scale", float),
        ("width", "width", int), ("height", "height", int), ("clip_skip", "clip_skip", int),
    ):  # fmt: skip
        _put_number(out, name, data.get(key), kind)
    if "clip_skip" in out:
        out["clip_skip"] = max(1, out["clip_skip"] + 1)  # InvokeAI counts skipped layers from 0
    scheduler = data.get("scheduler")
    if isinstance(scheduler, str):
        base = scheduler[:-2] if scheduler.endswith("_k") else scheduler
        if base in _INVOKE_SCHEDULERS:
            out["sampler_name"] = _INVOKE_SCHEDULERS[base]
            out["scheduler"] = "Karras" if scheduler.endswith("_k") else "Automatic"
    model = data.get("model")
    if find_model is not None and isinstance(model, dict):
        for key in ("hash", "name", "model_name"):
            value = model.get(key)
            title = find_model(value) if isinstance(value, str) else None
            if title:
                out["checkpoint"] = title
                break
    return out


def _comfy_text(graph: Mapping[str, Any], link: Any, depth: int = 0) -> str | None:
    """The text of the CLIPTextEncode node a KSampler input is wired to (through a few nodes)."""
    if not isinstance(link, list) or not link or depth > 8:
        return None
    node = graph.get(str(link[0]))
    if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
        return None
    inputs = node["inputs"]
    if isinstance(inputs.get("text"), str):
        return str(inputs["text"])
    for key in ("conditioning", "conditioning_1", "positive", "text_g"):
        found = _comfy_text(graph, inputs.get(key), depth + 1)
        if found is not None:
            return found
    return None


def from_comfyui(text: str, find_model: FindModel | None = None) -> dict[str, Any]:
    graph = _json(text)
    if not isinstance(graph, dict):
        return {}
    nodes = {k: v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    out: dict[str, Any] = {}
    sampler = next((n for n in nodes.values() if str(n.get("class_type", "")).startswith("KSampler")), None)
    if sampler is not None:
        inputs = sampler["inputs"]
        _put_number(out, "seed", inputs.get("seed", inputs.get("noise_seed")), int)
        _put_number(out, "steps", inputs.get("steps"), int)
        _put_number(out, "cfg_scale", inputs.get("cfg"), float)
        if inputs.get("sampler_name") in _COMFY_SAMPLERS:
            out["sampler_name"] = _COMFY_SAMPLERS[inputs["sampler_name"]]
        if inputs.get("scheduler") in _COMFY_SCHEDULES:
            out["scheduler"] = _COMFY_SCHEDULES[inputs["scheduler"]]
        for key, name in (("positive", "prompt"), ("negative", "negative_prompt")):
            found = _comfy_text(nodes, inputs.get(key))
            if found is not None:
                out[name] = found
    for node in nodes.values():
        kind, inputs = str(node.get("class_type", "")), node["inputs"]
        if "LatentImage" in kind:
            _put_number(out, "width", inputs.get("width"), int)
            _put_number(out, "height", inputs.get("height"), int)
            _put_number(out, "batch_size", inputs.get("batch_size"), int)
        if kind.startswith("CheckpointLoader") and find_model is not None:
            name = inputs.get("ckpt_name")
            title = find_model(name) if isinstance(name, str) else None
            if title:
                out["checkpoint"] = title
    return out


def from_chunks(chunks: Mapping[str, str], find_model: FindModel | None = None) -> tuple[str, dict[str, Any]]:
    """(which format, fields) from an image's text chunks; ("", {}) when none is known."""
    if chunks.get("parameters"):
        return "A1111 infotext", from_infotext(chunks["parameters"], find_model)
    if chunks.get("invokeai_metadata"):
        return "InvokeAI", from_invokeai(chunks["invokeai_metadata"], find_model)
    if chunks.get("prompt"):
        fields = from_comfyui(chunks["prompt"], find_model)
        if fields:
            return "ComfyUI", fields
    return "", {}
