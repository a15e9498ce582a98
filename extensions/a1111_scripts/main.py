"""A1111's selectable scripts, registered under A1111's names so its clients' `script_name` and positional
`script_args` work: Prompt matrix and Prompts from file or textbox (txt2img and img2img), Outpainting
mk2 and Poor man's outpainting (img2img, on the engine's own outpainting), SD upscale (txt2img: the
txt2img pictures, then each one upscaled; img2img: the init image; tile by tile)."""

from __future__ import annotations

from webui.plugins.api import ExtensionContext, Registry, ScriptSpec, hookimpl

from . import outpainting, prompt_matrix, prompts_file, sd_upscale


@hookimpl
def register(registry: Registry, context: ExtensionContext) -> None:
    registry.add(
        ScriptSpec(
            "Prompt matrix",
            lambda runner, request, args: prompt_matrix.run(runner, request, args, context.outputs_dir),
            prompt_matrix.FIELDS,
        )
    )
    registry.add(ScriptSpec("Prompts from file or textbox", prompts_file.run, prompts_file.FIELDS))
    registry.add(
        ScriptSpec("Outpainting mk2", outpainting.run_mk2, outpainting.MK2_FIELDS, tabs=("img2img",))
    )
    registry.add(
        ScriptSpec("Poor man's outpainting", outpainting.run_poor, outpainting.POOR_FIELDS, tabs=("img2img",))
    )
    registry.add(
        ScriptSpec(
            "SD upscale",
            lambda runner, request, args: sd_upscale.run(runner, request, args, context.outputs_dir),
            sd_upscale.FIELDS,
        )
    )
