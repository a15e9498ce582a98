"""The studio's pure parts: image metadata -> fields, token counter, painted mask, no torch in the UI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from webui.core.outputs.infotext import format_infotext
from webui.core.prompts.token_count import TokenCounter
from webui.ui import params
from webui.ui.img2img_tab import mask_from_editor


def test_infotext_fills_every_named_field_and_resets_omitted_defaults() -> None:
    text = format_infotext(
        "a cat, (red:1.2)",
        "blurry",
        {"Steps": 12, "Sampler": "Euler a", "Schedule type": "Karras", "CFG scale": 6.5, "Seed": 77,
         "Size": "96x64", "Model hash": "abc123", "Variation seed": 5, "Variation seed strength": 0.25,
         "Denoising strength": 0.4, "Hires upscale": 1.5, "Hires upscaler": "Latent", "Mask blur": 8,
         "Masked content": "latent noise", "Inpaint area": "Only masked"},
    )  # fmt: skip
    found = params.from_infotext(
        text, lambda name: "model.safetensors [abc123]" if name == "abc123" else None
    )
    assert found["prompt"] == "a cat, (red:1.2)" and found["negative_prompt"] == "blurry"
    assert (found["steps"], found["seed"], found["width"], found["height"]) == (12, 77, 96, 64)
    assert (found["sampler_name"], found["scheduler"], found["cfg_scale"]) == ("Euler a", "Karras", 6.5)
    assert (found["subseed"], found["subseed_strength"]) == (5, 0.25)
    assert found["enable_hr"] is True and found["hr_scale"] == 1.5 and found["denoising_strength"] == 0.4
    assert found["clip_skip"] == 1  # omitted means 1, as A1111 pastes it
    assert (found["mask_blur"], found["inpainting_fill"], found["inpaint_full_res"]) == (8, 2, True)
    assert found["checkpoint"] == "model.safetensors [abc123]"
    assert params.from_infotext("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}


def test_old_combined_sampler_names_split_into_sampler_and_schedule() -> None:
    assert params.split_sampler("DPM++ 2M Karras", None) == ("DPM++ 2M", "Karras")
    assert params.split_sampler("Euler a", None) == ("Euler a", "Automatic")


def test_invokeai_and_comfyui_metadata() -> None:
    meta = {"positive_prompt": "p", "negative_prompt": "n", "seed": 3, "steps": 9, "cfg_scale": 4}
    invoke = json.dumps({**meta, "width": 64, "height": 128, "scheduler": "dpmpp_2m_k"})
    fmt, fields = params.from_chunks({"invokeai_metadata": invoke})
    assert fmt == "InvokeAI" and fields["sampler_name"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    assert (fields["prompt"], fields["seed"], fields["height"]) == ("p", 3, 128)
    sampler = {"seed": 8, "steps": 5, "cfg": 3.5, "sampler_name": "euler_ancestral", "scheduler": "normal"}
    graph = {
        "1": {"class_type": "KSampler", "inputs": {**sampler, "positive": ["2", 0], "negative": ["3", 0]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg"}},
    }
    fmt, fields = params.from_chunks({"prompt": json.dumps(graph)})
    assert fmt == "ComfyUI" and fields == {
        "seed": 8, "steps": 5, "cfg_scale": 3.5, "sampler_name": "Euler a", "scheduler": "Automatic",
        "prompt": "pos", "negative_prompt": "neg",
    }  # fmt: skip
    assert params.from_chunks({"prompt": "not json"}) == ("", {})


def test_token_counter_chunks_of_75() -> None:
    counter = TokenCounter()
    assert str(counter.count("")) == "0/75"
    assert str(counter.count("a photo of an astronaut riding a horse")) == "8/75"
    long = counter.count(", ".join(["cat"] * 60))
    assert long.tokens == 119 and long.capacity == 150 and long.chunks == 2
    assert counter.count("[short:a much longer prompt than before:3] <lora:x:1>").tokens == 6


def test_painted_mask_is_the_or_of_layer_alphas() -> None:
    bg = np.zeros((8, 8, 4), np.uint8)
    a, b = np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 4), np.uint8)
    a[1, 1, 3] = 255
    b[6, 5, 3] = 10
    mask = mask_from_editor({"background": bg, "layers": [a, b], "composite": bg})
    assert mask is not None and mask.mode == "L"
    arr = np.asarray(mask)
    assert arr[1, 1] == 255 and arr[6, 5] == 255 and arr.sum() == 2 * 255
    assert mask_from_editor({"background": bg, "layers": [], "composite": bg}) is None


def test_the_ui_never_imports_torch() -> None:
    ui = Path(__file__).resolve().parents[1] / "webui" / "ui"
    offenders = [p.name for p in ui.glob("*.py") if "import torch" in p.read_text(encoding="utf-8")]
    assert offenders == []
