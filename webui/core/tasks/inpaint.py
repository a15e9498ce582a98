"""Inpainting on pixels: an init image and mask made ready for the loop, and the result put back.

`prepare_init` follows A1111's img2img set-up, in its order:

    mask: invert (if asked) -> the "hard" mask (unblurred) -> blur x, y
    whole picture:  image and mask resized by the resize mode to width x height; the overlay mask is
                    the blurred mask x 2 (A1111's mask_for_overlay)
    only masked:    box = the blurred mask's bounding box + padding, grown to the width:height ratio;
                    image and mask cropped to it and brought to width x height by "resize and fill";
                    the overlay mask is the blurred mask at the image's own size. An empty mask falls back
                    to whole picture (A1111 does the same).
    masked content "fill": the work image's masked area painted from its surroundings

`finish_image` puts a decoded result back: paste into the box (only masked), composite under the
original with the overlay mask, then restore every pixel outside the hard mask exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from PIL import Image

from webui.core import soft_inpaint_fields as soft_fields
from webui.core.tasks import masks, soft_inpaint
from webui.core.tasks.input_images import init_image_hash
from webui.core.tasks.resize import JUST_RESIZE, LATENT_UPSCALE, RESIZE_AND_FILL, resize_image

if TYPE_CHECKING:
    from webui.core.types import Img2ImgRequest

# "original" (1) is A1111's default and is not written.
_FILL_NAMES: Final = {0: "fill", 2: "latent noise", 3: "latent nothing"}


@dataclass(frozen=True)
class PreparedImage:
    """One init image ready for encoding, and what is needed to put the result back."""

    image: Image.Image  # RGB to encode: width x height (own size for resize mode 3 without a mask)
    mask: Image.Image | None  # "L", the image's size, blurred: the latent mask and the 9-channel cond
    original: Image.Image  # the init in output geometry (width x height, or its own size: only masked)
    overlay_mask: Image.Image | None = None  # "L", original's size: 255 = the result shows
    hard_mask: Image.Image | None = None  # "L", original's size, unblurred: 0 = restored exactly
    box: masks.Box | None = None  # only masked: the processed region of the original

    @property
    def output_size(self) -> tuple[int, int]:
        return self.original.size

    @property
    def cond_image(self) -> Image.Image:
        """The image for a 9-channel UNet's masked-image conditioning: the work image at the mask's size
        (they differ only with resize mode 3, whose image is encoded at its own size)."""
        if self.mask is None or self.mask.size == self.image.size:
            return self.image
        return resize_image(JUST_RESIZE, self.image, *self.mask.size)


def _pixel_mode(resize_mode: int) -> int:
    """Mode 3 resizes latents; on pixels (masks, the paste-back original) it is a plain resize."""
    return JUST_RESIZE if resize_mode == LATENT_UPSCALE else resize_mode


def prepare_init(
    image: Image.Image,
    mask: Image.Image | None,
    *,
    width: int,
    height: int,
    resize_mode: int = JUST_RESIZE,
    mask_blur_x: int = 4,
    mask_blur_y: int = 4,
    inpainting_fill: int = 1,
    inpaint_full_res: bool = False,
    inpaint_full_res_padding: int = 32,
    invert: bool = False,
) -> PreparedImage:
    """`image` (sanitised RGB) and `mask` ("L", the image's size, or None) prepared for the loop."""
    pixel_mode = _pixel_mode(resize_mode)
    if mask is None:
        work = image if resize_mode == LATENT_UPSCALE else resize_image(resize_mode, image, width, height)
        return PreparedImage(work, None, resize_image(pixel_mode, image, width, height))
    if mask.size != image.size:
        raise ValueError(f"mask is {mask.size}, image is {image.size}: sanitise the mask first")
    hard = masks.invert_mask(mask) if invert else mask.convert("L")
    blurred = masks.blur_mask(hard, mask_blur_x, mask_blur_y)
    box = masks.crop_region(blurred, inpaint_full_res_padding) if inpaint_full_res else None
    if box is not None:
        box = masks.expand_crop_region(box, width, height, image.width, image.height)
        work = resize_image(RESIZE_AND_FILL, image.crop(box), width, height)
        work_mask = resize_image(RESIZE_AND_FILL, blurred.crop(box), width, height)
        prepared = PreparedImage(work, work_mask, image.copy(), blurred, hard, box)
    else:
        work_mask = resize_image(pixel_mode, blurred, width, height)
        original = resize_image(pixel_mode, image, width, height)
        work = image if resize_mode == LATENT_UPSCALE else resize_image(resize_mode, image, width, height)
        hard_out = resize_image(pixel_mode, hard, width, height)
        prepared = PreparedImage(work, work_mask, original, masks.double_mask(work_mask), hard_out)
    if inpainting_fill == 0:
        fill_mask = work_mask if work_mask.size == work.size else work_mask.resize(work.size)
        prepared = replace(prepared, image=masks.fill_masked(work, fill_mask))
    return prepared


def finish_image(
    prepared: PreparedImage, generated: Image.Image, soft_opacity: Image.Image | None = None
) -> Image.Image:
    """The decoded result (width x height) in the original's geometry, unmasked pixels restored.

    With `soft_opacity` ("L", width x height: soft inpainting's difference composite, or all 255 for
    differential diffusion), the pixels where the mask is between 0 and 255 show the result by that
    opacity over the original; where the mask is 0 the original's own pixels show (soft_inpaint.py)."""
    if prepared.overlay_mask is None or prepared.hard_mask is None:
        return generated
    pasted = masks.paste_back(generated, prepared.original, prepared.overlay_mask, prepared.box)
    ordinary = masks.restore_unmasked(pasted, prepared.original, prepared.hard_mask)
    if soft_opacity is None:
        return ordinary
    size = prepared.original.size
    opacity = soft_inpaint.to_output(soft_opacity, size, prepared.box)
    blended = masks.paste_back(generated, prepared.original, opacity, prepared.box)
    return soft_inpaint.in_band(ordinary, blended, prepared.original, soft_mask(prepared))


def soft_mask(prepared: PreparedImage) -> Image.Image:
    """The blurred mask in the output's geometry (soft inpainting's band is where it is not 0 or 255)."""
    if prepared.box is not None and prepared.overlay_mask is not None:
        return prepared.overlay_mask  # the blurred mask at the image's own size
    if prepared.mask is None:
        raise ValueError("no mask")
    size = prepared.original.size
    return prepared.mask if prepared.mask.size == size else resize_image(JUST_RESIZE, prepared.mask, *size)


def blend_rule(request: Img2ImgRequest) -> soft_inpaint.BlendRule:
    """The request's mask blend: soft inpainting's settings, differential diffusion, or None (ordinary)."""
    if request.soft_inpainting:
        return soft_inpaint.SoftInpainting(*(float(getattr(request, p.field)) for p in soft_fields.PARAMS))
    if request.differential_diffusion:
        return soft_inpaint.DifferentialDiffusion()
    return None


def soft_infotext(request: Img2ImgRequest) -> dict[str, object]:
    """A1111's Soft inpainting keys (and ours for differential diffusion) when they are on."""
    if request.soft_inpainting:
        return {
            soft_fields.ENABLED_KEY: True,
            **{p.key: getattr(request, p.field) for p in soft_fields.PARAMS},
        }
    if request.differential_diffusion:
        return {soft_fields.DIFFERENTIAL_KEY: True}
    return {}


def infotext_params(
    request: Img2ImgRequest, init_image: Image.Image, *, only_masked_used: bool
) -> dict[str, object]:
    """A1111's img2img infotext keys for one image (None values are left out by the formatter).

    `init_image` is the image's sanitised init (hashed as A1111's "Init image hash"); `only_masked_used`
    says whether "only masked" really ran (an empty mask falls back to the whole picture, as in A1111).
    """
    masked = request.mask is not None
    blur = request.mask_blur_x if request.mask_blur_x == request.mask_blur_y else None
    out_px = request.outpaint_pixels
    matched = bool(out_px) and request.outpaint_fill == "matched"
    return {
        "Denoising strength": request.denoising_strength,
        "Init image hash": init_image_hash(init_image),
        "Mask blur": blur if (masked or out_px) and (request.mask_blur_x or request.mask_blur_y) else None,
        "Mask mode": "Inpaint not masked" if masked and request.inpainting_mask_invert else None,
        "Masked content": _FILL_NAMES.get(request.inpainting_fill) if masked or out_px else None,
        "Inpaint area": "Only masked" if only_masked_used else None,
        "Masked area padding": request.inpaint_full_res_padding if only_masked_used else None,
        "Noise multiplier": request.initial_noise_multiplier
        if request.initial_noise_multiplier != 1.0
        else None,
        "Outpaint pixels": out_px or None,
        "Outpaint directions": " ".join(request.outpaint_directions) if out_px else None,
        "Outpaint fill": request.outpaint_fill if out_px else None,
        "Outpaint noise": request.outpaint_noise if out_px and request.outpaint_noise else None,
        "Outpaint fall-off": request.outpaint_falloff if matched else None,
        "Outpaint colour variation": request.outpaint_color_variation if matched else None,
        **soft_infotext(request),
    }
