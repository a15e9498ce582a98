"""A test extension written against plugin API 2 only (the way extensions/controlnet will use it).

`strength` > 0 adds ControlNet-shaped residuals (one per UNet down-block output, plus the middle block)
to every model call in [start, end) of the steps, scaled by the mean brightness of the `hint` image
(white when none) and by the `scale` setting; `wrap` replaces the model for the call by a wrapper
that scales its prediction;
`repaint` > 0 sends every decoded picture through an img2img sub-pass at that denoising strength.
It serves GET /api/v1/extensions/residual_probe/calls and, A1111-style, /residual_probe/version.
"""

from __future__ import annotations

import torch
from PIL import ImageStat

from webui.plugins.api import Field, Img2ImgRequest, RouteSpec, SettingsSection, UiSection, hookimpl

CALLS: list[tuple[int, int, str]] = []  # (step, total, arch) of every before_model call with an effect


@hookimpl
def register(registry):
    registry.add(
        UiSection(
            ("txt2img", "img2img"),
            "Residual probe",
            fields=(
                Field("strength", "slider", 0.0, minimum=0.0, maximum=2.0),
                Field("start", "number", 0, minimum=0),
                Field("end", "number", 1000, minimum=0),
                Field("wrap", "checkbox", False),
                Field("hint", "image", None),
                Field("area", "mask", None),
                Field("mode", "radio", "add", choices=("add", "subtract")),
                Field("repaint", "slider", 0.0, minimum=0.0, maximum=1.0),
            ),
        )
    )
    registry.add(
        SettingsSection("Residual probe", (Field("scale", "slider", 1.0, minimum=0.0, maximum=4.0),))
    )
    registry.add(RouteSpec("/calls", lambda: {"calls": len(CALLS)}, summary="model calls changed so far"))
    registry.add(RouteSpec("/residual_probe/version", lambda: {"version": 2}, root=True))


def residual_shapes(config, height: int, width: int):
    """The shapes of a diffusers UNet's down-block outputs and of its middle block, per row."""
    chans = list(config.block_out_channels)
    per_block = config.layers_per_block
    shapes = [(chans[0], height, width)]
    for i, c in enumerate(chans):
        shapes += [(c, height, width)] * (per_block if isinstance(per_block, int) else per_block[i])
        if i < len(chans) - 1:
            height, width = (height + 1) // 2, (width + 1) // 2
            shapes.append((c, height, width))
    return shapes, (chans[-1], height, width)


class Scaled(torch.nn.Module):
    def __init__(self, model, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        return (out[0] * self.factor, *out[1:])


@hookimpl
def before_model(state, args, components, settings):
    if not args["start"] <= state.step < args["end"]:
        return
    inputs = state.inputs
    if args["strength"] > 0:
        level = ImageStat.Stat(args["hint"].convert("L")).mean[0] / 255 if args["hint"] else 1.0
        sign = 1.0 if args["mode"] == "add" else -1.0
        value = sign * args["strength"] * level * settings["scale"]
        rows, _, h, w = inputs.sample.shape
        downs, mid = residual_shapes(components.unet.config, h, w)
        like = dict(device=inputs.sample.device, dtype=inputs.sample.dtype)
        inputs.extra["down_block_additional_residuals"] = tuple(
            torch.full((rows, *s), value, **like) for s in downs
        )
        inputs.extra["mid_block_additional_residual"] = torch.full((rows, *mid), value, **like)
    if args["wrap"]:
        inputs.model = Scaled(inputs.model, 0.5)
    if args["strength"] > 0 or args["wrap"]:
        CALLS.append((state.step, state.total, components.arch))


@hookimpl
def after_decode(images, request, args, runner):
    if args["repaint"] <= 0:
        return None
    out = []
    for im in images:
        sub = Img2ImgRequest(
            prompt=request.prompt,
            init_images=(im,),
            denoising_strength=args["repaint"],
            width=im.width,
            height=im.height,
            steps=request.steps,
            seed=1,
            save_images=False,
        )
        (made,) = runner(sub)
        out.append(made)
    return out
